#!/usr/bin/env bash
# `make demo`: unified-connectors end to end on this machine, in one command.
#
#  1. builds the binaries (the operator/collector and the test servers),
#  2. starts a private Kubernetes control plane (e2e/scripts/cluster.sh; no kubelet, so pods stay Pending),
#  3. starts the test servers (`uc-testkit serve`: Okta with a backlog and live events, Azure Monitor, Splunk
#     HEC, a webhook receiver) with exactly the credentials written in config/samples,
#  4. installs the CRDs and the operator from the Helm chart, and runs the operator as a local process from the
#     rendered Deployment (its command, args and env, authenticated as its own ServiceAccount),
#  5. applies config/samples (one Okta connector, Sentinel + Splunk HEC + webhook bindings) with the product
#     URLs pointed at the test servers,
#  6. runs each collector the operator creates as a local process from its Deployment (command, args, env, the
#     mounted ConfigMap and Secret as files, as the collector ServiceAccount), restarting it when the operator
#     rolls the Deployment,
#  7. shows what a user looks at: `kubectl get connectors` going Pending -> Ready, what each product received,
#     the Okta request count (one collector for three products), and the metrics URLs,
# until Ctrl-C; then stops everything it started and removes the cluster.
#
# Environment: UC_DEMO_DURATION=SECONDS stops by itself and then checks that everything is Ready and every
# product received events, none twice (a smoke test; 0 = until Ctrl-C, the default), UC_DEMO_EVENTS_PER_SEC
# (default 5) and UC_DEMO_SEED_EVENTS (default 500) shape the Okta traffic, UC_DEMO_KEEP=1 keeps the state
# directory (logs) after exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS="$ROOT/e2e/scripts"
cd "$ROOT"

TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET/debug/unified-connectors"
TESTKIT="$TARGET/debug/uc-testkit"
OP_NS=unified-connectors-system
USER_NS=security
RELEASE=unified-connectors
DOMAIN=yourcompany.okta.com
DURATION="${UC_DEMO_DURATION:-0}"
LIVE_RATE="${UC_DEMO_EVENTS_PER_SEC:-5}"
SEED_EVENTS="${UC_DEMO_SEED_EVENTS:-500}"

DEMO_DIR="$(mktemp -d /tmp/uc-demo.XXXXXX)"
export UC_CLUSTER_DIR="$DEMO_DIR/cluster"

log() { echo "[demo] $*" >&2; }
step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# --- processes we started, stopped on exit ----------------------------------------------------------------
declare -A COLLECTOR_PID=() COLLECTOR_HASH=() COLLECTOR_METRICS=()
TESTKIT_PID="" OPERATOR_PID=""

stop_pid() {
	local pid="$1"
	[[ -n "$pid" ]] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	echo >&2
	log "stopping"
	local name
	for name in "${!COLLECTOR_PID[@]}"; do stop_pid "${COLLECTOR_PID[$name]}"; done
	stop_pid "$OPERATOR_PID"
	stop_pid "$TESTKIT_PID"
	"$SCRIPTS/cluster.sh" down >/dev/null 2>&1 || true
	if [[ -n "${UC_DEMO_KEEP:-}" ]]; then
		log "logs kept in $DEMO_DIR"
	else
		rm -rf "$DEMO_DIR"
	fi
	log "cleaned up"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 0' INT
trap 'exit 143' TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# wait_until SECONDS WHAT CMD...: poll CMD every 0.5 s.
wait_until() {
	local timeout="$1" what="$2"
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
		sleep 0.5
	done
}

# kubeconfig_for SA: a kubeconfig for this cluster authenticated as ServiceAccount SA of $OP_NS, so the
# operator and collectors run with exactly the RBAC the chart grants them.
kubeconfig_for() {
	local sa="$1" file="$DEMO_DIR/kubeconfig-$1" token server ca
	token="$(kubectl create token "$sa" -n "$OP_NS" --duration 24h)"
	server="$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')"
	ca="$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')"
	cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: demo, cluster: {server: "$server", certificate-authority: "$ca"}}]
users: [{name: $sa, user: {token: "$token"}}]
contexts: [{name: demo, context: {cluster: demo, user: $sa, namespace: $OP_NS}}]
current-context: demo
EOF
	chmod 600 "$file"
	echo "$file"
}

# container_env DEPLOY_JSON POD_NAME: the first container's env as NAME=VALUE lines, fieldRefs resolved
# the way the kubelet would.
container_env() {
	jq -r --arg ns "$OP_NS" --arg pod "$2" '.spec.template.spec.containers[0].env // [] | .[] |
		.name + "=" + (if .valueFrom.fieldRef.fieldPath == "metadata.namespace" then $ns
		elif .valueFrom.fieldRef.fieldPath == "metadata.name" then $pod
		elif .valueFrom then error("env \(.name): unsupported valueFrom")
		else (.value // "") end)' <<<"$1"
}

# program DEPLOY_JSON: the container's command must be the unified-connectors binary; this build stands in
# for the image's copy.
check_program() {
	local cmd
	cmd="$(jq -r '.spec.template.spec.containers[0].command[0] // "unified-connectors"' <<<"$1")"
	[[ "$(basename "$cmd")" == unified-connectors ]] || die "the container runs $cmd, not unified-connectors"
}

# --- 1. build ------------------------------------------------------------------------------------------------
step "1/7 Building unified-connectors and the test servers"
command -v jq >/dev/null || die "jq is needed (apt-get install jq)"
command -v kubectl >/dev/null || die "kubectl is needed"
cargo build --bins -p unified-connectors -p uc-testkit
[[ -x "$BIN" && -x "$TESTKIT" ]] || die "build did not produce $BIN and $TESTKIT"

# --- 2. control plane ----------------------------------------------------------------------------------------
step "2/7 Starting a local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager)"
eval "$("$SCRIPTS/cluster.sh" up)"
log "KUBECONFIG=$KUBECONFIG (Kubernetes $(kubectl version -o json 2>/dev/null | jq -r .serverVersion.gitVersion))"

# --- 3. test servers -----------------------------------------------------------------------------------------
step "3/7 Starting the test servers: Okta ($SEED_EVENTS events in the last hour, $LIVE_RATE/s live), Azure Monitor, Splunk HEC, webhook"
# The credentials are the placeholder values of config/samples/secrets.yaml, so the samples apply unchanged.
sample_value() { sed -n "s/^  $1: //p" config/samples/secrets.yaml | head -n1; }
sample_stream() { sed -n 's/^ *streamName: //p' config/samples/bindings.yaml | head -n1; }
sample_dcr() { sed -n 's/^ *dcrImmutableId: //p' config/samples/bindings.yaml | head -n1; }
SPLUNK_TOKEN="$(sed -n '/name: splunk-hec-token/,/^---/s/^  token: //p' config/samples/secrets.yaml)"
"$TESTKIT" serve \
	--token "$(sed -n '/name: okta-api-token/,/^---/s/^  token: //p' config/samples/secrets.yaml)" \
	--org "$DOMAIN" --seed-events "$SEED_EVENTS" --live-rate "$LIVE_RATE" \
	--azure-tenant "$(sample_value tenantId)" --azure-client-id "$(sample_value clientId)" \
	--azure-client-secret "$(sample_value clientSecret)" --azure-dcr "$(sample_dcr)" --azure-stream "$(sample_stream)" \
	--hec-token "$SPLUNK_TOKEN" --webhook-secret "$(sample_value secret)" \
	--info-file "$DEMO_DIR/testkit.json" >"$DEMO_DIR/testkit.out" 2>"$DEMO_DIR/testkit.log" &
TESTKIT_PID=$!
wait_until 30 "the test servers" test -s "$DEMO_DIR/testkit.json"
INFO="$(cat "$DEMO_DIR/testkit.json")"
OKTA_URL="$(jq -r .okta.url <<<"$INFO")"
AZURE_URL="$(jq -r .azure.url <<<"$INFO")"
HEC_URL="$(jq -r .hec.url <<<"$INFO")"
WEBHOOK_URL="$(jq -r .webhook.url <<<"$INFO")"
log "Okta $OKTA_URL, Azure $AZURE_URL, Splunk HEC $HEC_URL, webhook $WEBHOOK_URL"

# --- 4. install and run the operator -------------------------------------------------------------------------
step "4/7 Installing the CRDs and the operator from the Helm chart (charts/unified-connectors)"
kubectl create namespace "$OP_NS" >/dev/null
kubectl label namespace "$OP_NS" pod-security.kubernetes.io/enforce=restricted >/dev/null
# Test-only flags: Okta lives at the test server, and products accept plain http on loopback.
"$SCRIPTS/helm.sh" template --include-crds \
	--set-json "extraArgs=[\"--okta-url-template=$(jq -r .okta.url_template <<<"$INFO")\",\"--allow-insecure-http\"]" \
	>"$DEMO_DIR/install.yaml"
kubectl apply --server-side -f "$DEMO_DIR/install.yaml" | sed 's/^/  /'
kubectl wait --for condition=established --timeout=60s crd/unifiedconnectors.connectors.unified.dev crd/productbindings.connectors.unified.dev >/dev/null

OP_DEPLOY="$(kubectl get deployment "$RELEASE" -n "$OP_NS" -o json)"
check_program "$OP_DEPLOY"
OP_SA="$(jq -r .spec.template.spec.serviceAccountName <<<"$OP_DEPLOY")"
OP_PORT="$(free_port)"
mapfile -t OP_ARGS < <(jq -r '.spec.template.spec.containers[0].args[]' <<<"$OP_DEPLOY" |
	sed "s/^--metrics-addr=.*/--metrics-addr=127.0.0.1:$OP_PORT/")
mapfile -t OP_ENV < <(container_env "$OP_DEPLOY" "$RELEASE-demo-0")
log "running the operator as ServiceAccount $OP_SA: unified-connectors ${OP_ARGS[*]}"
env "${OP_ENV[@]}" RUST_LOG=info KUBECONFIG="$(kubeconfig_for "$OP_SA")" \
	"$BIN" "${OP_ARGS[@]}" >"$DEMO_DIR/operator.log" 2>&1 &
OPERATOR_PID=$!
wait_until 60 "the operator's /readyz" curl -fsS "http://127.0.0.1:$OP_PORT/readyz"
COLLECTOR_KUBECONFIG="$(kubeconfig_for unified-connectors-collector)"

# --- 5. samples ----------------------------------------------------------------------------------------------
step "5/7 Applying config/samples in namespace $USER_NS (product URLs pointed at the test servers)"
kubectl create namespace "$USER_NS" >/dev/null
kubectl kustomize config/samples |
	sed -e "s#^\( *\)endpoint: https://.*#\1endpoint: $AZURE_URL\n\1authorityHost: $AZURE_URL#" \
		-e "s#^\( *url:\) https://splunk\..*#\1 $HEC_URL#" \
		-e "s#^\( *url:\) https://hooks\.example\.com\(.*\)#\1 $WEBHOOK_URL\2#" >"$DEMO_DIR/samples.yaml"
kubectl apply --server-side -n "$USER_NS" -f "$DEMO_DIR/samples.yaml" | sed 's/^/  /'

# --- 6. collectors -------------------------------------------------------------------------------------------
# start_collector NAME DEPLOY_JSON: materialise the pod's ConfigMap/Secret volumes as files, rewrite the
# mount paths to them, move `listen` to a free loopback port, and run the container's command.
start_collector() {
	local name="$1" deploy="$2" dir port
	check_program "$deploy"
	dir="$DEMO_DIR/collectors/$name-$(date +%s%N)"
	mkdir -p "$dir"
	local -a rewrite=()
	local vol mount cm secret key value
	while IFS='|' read -r vol mount; do
		mkdir -p "$dir/$vol"
		cm="$(jq -r --arg v "$vol" '.spec.template.spec.volumes[] | select(.name == $v) | .configMap.name // ""' <<<"$deploy")"
		secret="$(jq -r --arg v "$vol" '.spec.template.spec.volumes[] | select(.name == $v) | .secret.secretName // ""' <<<"$deploy")"
		if [[ -n "$cm" ]]; then
			kubectl get configmap "$cm" -n "$OP_NS" -o json | jq -r '.data // {} | keys[]' | while read -r key; do
				kubectl get configmap "$cm" -n "$OP_NS" -o json | jq -j --arg k "$key" '.data[$k]' >"$dir/$vol/$key"
			done
		elif [[ -n "$secret" ]]; then
			kubectl get secret "$secret" -n "$OP_NS" -o json | jq -r '.data // {} | to_entries[] | .key + " " + .value' |
				while read -r key value; do
					(umask 077 && base64 -d <<<"$value" >"$dir/$vol/$key")
				done
		else
			die "collector $name: volume $vol is neither a ConfigMap nor a Secret"
		fi
		rewrite+=(-e "s#$mount#$dir/$vol#g")
	done < <(jq -r '.spec.template.spec.containers[0].volumeMounts // [] | .[] | .name + "|" + .mountPath' <<<"$deploy")
	port="$(free_port)"
	local f
	for f in "$dir"/*/*.yaml; do
		[[ -f "$f" ]] || continue
		sed -i "${rewrite[@]}" "$f"
		if grep -q '^listen:' "$f"; then
			sed -i "s/^listen:.*/listen: 127.0.0.1:$port/" "$f"
		else
			echo "listen: 127.0.0.1:$port" >>"$f"
		fi
	done
	local -a args envs
	mapfile -t args < <(jq -r '.spec.template.spec.containers[0].args[]' <<<"$deploy" | sed "${rewrite[@]}")
	mapfile -t envs < <(container_env "$deploy" "$name-demo")
	env "${envs[@]}" KUBECONFIG="$COLLECTOR_KUBECONFIG" "$BIN" "${args[@]}" >"$dir/collector.log" 2>&1 &
	COLLECTOR_PID[$name]=$!
	COLLECTOR_METRICS[$name]="http://127.0.0.1:$port/metrics"
	echo "$(date +%T) collector $name started (pid ${COLLECTOR_PID[$name]}, log $dir/collector.log)" >>"$DEMO_DIR/events"
}

# sync_collectors: one local process per collector Deployment, restarted when its pod template changes
# (the operator rolls it when bindings or credentials change), stopped when the Deployment goes.
sync_collectors() {
	local list name deploy hash
	list="$(kubectl get deployments -n "$OP_NS" -l app.kubernetes.io/component=collector -o json)"
	declare -A seen=()
	while read -r name; do
		[[ -n "$name" ]] || continue
		seen[$name]=1
		deploy="$(jq --arg n "$name" '.items[] | select(.metadata.name == $n)' <<<"$list")"
		hash="$(jq -c '.spec.template' <<<"$deploy" | sha256sum | cut -c1-16)"
		if [[ "${COLLECTOR_HASH[$name]:-}" != "$hash" ]] || ! kill -0 "${COLLECTOR_PID[$name]:-0}" 2>/dev/null; then
			if [[ -n "${COLLECTOR_PID[$name]:-}" ]]; then
				stop_pid "${COLLECTOR_PID[$name]}"
				echo "$(date +%T) collector $name rolled out (new pod template)" >>"$DEMO_DIR/events"
			fi
			COLLECTOR_HASH[$name]="$hash"
			start_collector "$name" "$deploy"
		fi
	done < <(jq -r '.items[].metadata.name' <<<"$list")
	for name in "${!COLLECTOR_PID[@]}"; do
		if [[ -z "${seen[$name]:-}" ]]; then
			stop_pid "${COLLECTOR_PID[$name]}"
			unset "COLLECTOR_PID[$name]" "COLLECTOR_HASH[$name]" "COLLECTOR_METRICS[$name]"
			echo "$(date +%T) collector $name stopped (Deployment deleted)" >>"$DEMO_DIR/events"
		fi
	done
}

step "6/7 Waiting for the operator to create the collector, then running it from its Deployment"
wait_until 60 "a collector Deployment" bash -c "kubectl get deployments -n $OP_NS -l app.kubernetes.io/component=collector -o name | grep -q ."
sync_collectors

# --- 7. what a user looks at ---------------------------------------------------------------------------------
declare -A LAST_PHASE=()
track_phases() {
	local key phase
	declare -A now=()
	while read -r key phase; do
		now[$key]=1
		if [[ "${LAST_PHASE[$key]:-}" != "$phase" ]]; then
			echo "$(date +%T) $key: ${LAST_PHASE[$key]:-(new)} -> $phase" >>"$DEMO_DIR/events"
			LAST_PHASE[$key]="$phase"
		fi
	done < <(kubectl get uc,pb -n "$USER_NS" -o json |
		jq -r '.items[] | (.kind | ascii_downcase) + "/" + .metadata.name + " " + (.status.phase // "-")')
	for key in "${!LAST_PHASE[@]}"; do
		if [[ -z "${now[$key]:-}" ]]; then
			echo "$(date +%T) $key: deleted" >>"$DEMO_DIR/events"
			unset "LAST_PHASE[$key]"
		fi
	done
}

product_line() {
	local name="$1" url="$2" stats
	stats="$(curl -fsS --max-time 2 "$url/_admin/stats" 2>/dev/null)" || { printf '  %-18s (no answer)\n' "$name"; return; }
	jq -r --arg n "$name" '"  \($n | . + (" " * (18 - length))) received \(.received.unique) events (\(.received.duplicates) duplicates) in \(.received.batches) batches"' <<<"$stats"
}

render() {
	echo "unified-connectors demo: $(((SECONDS - START) / 60))m$(((SECONDS - START) % 60))s   (Ctrl-C stops and cleans up)"
	echo
	echo "\$ kubectl get connectors -n $USER_NS -o wide"
	kubectl get connectors -n "$USER_NS" -o wide 2>&1 | sed 's/^/  /'
	echo
	echo "What each product received (the test servers' own count, deduplicated by event uuid):"
	product_line "Sentinel (Azure)" "$AZURE_URL"
	product_line "Splunk HEC" "$HEC_URL"
	product_line "webhook" "$WEBHOOK_URL"
	curl -fsS --max-time 2 "$OKTA_URL/_admin/stats" 2>/dev/null | jq -r --arg d "$DOMAIN" \
		'"  Okta org \($d): \(.events[$d] // 0) events so far; \(.requests.total) System Log requests in all (one collector reads for every bound product)"' || true
	echo
	if [[ -n "$HAVE_LUA" ]]; then
		echo "What Argo CD shows (config/argocd/health.lua on the live objects):"
		argocd_health | sed 's/^/  /'
		echo
	fi
	echo "Metrics:"
	echo "  operator   http://127.0.0.1:$OP_PORT/metrics   (unified_connectors_connectors{phase=...})"
	local name
	for name in "${!COLLECTOR_METRICS[@]}"; do
		echo "  collector  ${COLLECTOR_METRICS[$name]}   ($name: uc_collector_events_delivered_total{product=...})"
	done
	echo
	echo "Recent changes:"
	tail -n 8 "$DEMO_DIR/events" 2>/dev/null | sed 's/^/  /'
	echo
	echo "Try: kubectl describe uc okta-prod -n $USER_NS   (with KUBECONFIG=$KUBECONFIG)"
	echo "Logs: $DEMO_DIR/operator.log, $DEMO_DIR/collectors/*/collector.log"
}

# Argo CD's verdict per object, when Lua is installed (config/argocd/test.sh installs it for the tests).
HAVE_LUA=""
if command -v lua5.4 >/dev/null && lua5.4 -e 'require("lyaml")' >/dev/null 2>&1; then HAVE_LUA=1; fi
argocd_health() {
	kubectl get uc,pb -n "$USER_NS" -o yaml >"$DEMO_DIR/live.yaml"
	config/argocd/test.sh --eval "$DEMO_DIR/live.yaml"
}

# verify: with UC_DEMO_DURATION the demo doubles as a smoke test: every connector and binding Ready, every
# product received events, none twice.
verify() {
	local passed=0 failed=0 key url name stats
	check() {
		if eval "$2"; then passed=$((passed + 1)); else failed=$((failed + 1)); log "FAIL: $1"; fi
	}
	for key in "${!LAST_PHASE[@]}"; do
		check "$key is ${LAST_PHASE[$key]}, not Ready" "[[ ${LAST_PHASE[$key]} == Ready ]]"
	done
	check "expected 1 connector and 3 bindings, saw ${#LAST_PHASE[@]}" "((${#LAST_PHASE[@]} == 4))"
	for name in Sentinel:$AZURE_URL Splunk:$HEC_URL webhook:$WEBHOOK_URL; do
		url="${name#*:}"
		stats="$(curl -fsS --max-time 2 "$url/_admin/stats" || echo '{}')"
		check "${name%%:*} received nothing" "(($(jq '.received.unique // 0' <<<"$stats") > 0))"
		check "${name%%:*} received duplicates" "(($(jq '.received.duplicates // 1' <<<"$stats") == 0))"
	done
	if [[ -n "$HAVE_LUA" ]]; then
		local line
		while read -r line; do
			check "Argo CD health: $line" "[[ \"$line\" == *' Healthy: '* ]]"
		done < <(argocd_health)
	fi
	echo "demo: $passed passed, $failed failed"
	((failed == 0))
}

step "7/7 Watching (phases move Pending -> Ready once each product has received data)"
START=$SECONDS
last_printed=""
last_print_time=0
while :; do
	if ! kill -0 "$OPERATOR_PID" 2>/dev/null; then
		tail -n 20 "$DEMO_DIR/operator.log" >&2
		die "the operator exited (log above)"
	fi
	sync_collectors
	track_phases
	screen="$(render)"
	if [[ -t 1 ]]; then
		clear
		echo "$screen"
	else
		# Not a terminal (CI, a pipe): print when a phase changed or something happened, else every 30 s.
		body="${LAST_PHASE[*]} $(wc -l <"$DEMO_DIR/events" 2>/dev/null)"
		if [[ "$body" != "$last_printed" ]] || ((SECONDS - last_print_time >= 30)); then
			echo "----------------------------------------------------------------------------------------"
			echo "$screen"
			last_printed="$body"
			last_print_time=$SECONDS
		fi
	fi
	if ((DURATION > 0 && SECONDS - START >= DURATION)); then
		log "UC_DEMO_DURATION=${DURATION}s reached"
		verify
		exit $?
	fi
	sleep 2
done
