#!/usr/bin/env bash
# `make bench-operator`: the operator at scale on the local control plane.
# Creates (by default) 1,000 connectors over 200 distinct Okta domains with 3 bindings each,
# starts the operator (release build) and prints:
#   - time until every connector and binding is reconciled (status observed at its generation)
#     and every source has its collector Deployment;
#   - API requests made by the operator (its own identity, counted from the API server's audit
#     log) in total and per object;
#   - the operator's peak memory (VmHWM) and its CPU while idle after convergence;
#   - writes by the operator while idle (a reconcile loop would keep writing).
# Targets (issue 3): all reconciled within 60 s on 2 cores, peak memory < 150 MiB, idle CPU
# near zero, no writes after convergence. This is a benchmark: it prints, it does not fail on
# a missed target (it fails only if convergence never happens).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS="$ROOT/e2e/scripts"
cd "$ROOT"

CONNECTORS="${UC_BENCH_CONNECTORS:-1000}"
DOMAINS="${UC_BENCH_DOMAINS:-200}"
NAMESPACES="${UC_BENCH_NAMESPACES:-10}"
TIMEOUT="${UC_BENCH_TIMEOUT:-600}"
IDLE_SECONDS="${UC_BENCH_IDLE_SECONDS:-20}"
PROFILE="${UC_BENCH_PROFILE:-release}"
OP_NS=uc-bench-system
TOKEN=00bench-okta-token

log() { echo "[bench-operator] $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

WORK="$(mktemp -d /tmp/uc-bench.XXXXXX)"
export UC_CLUSTER_DIR="$WORK/cluster"
export UC_CLUSTER_AUDIT=1
OP_PID=""
TESTKIT_PID=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	[[ -n "$OP_PID" ]] && kill "$OP_PID" 2>/dev/null && wait "$OP_PID" 2>/dev/null
	[[ -n "$TESTKIT_PID" ]] && kill "$TESTKIT_PID" 2>/dev/null && wait "$TESTKIT_PID" 2>/dev/null
	"$SCRIPTS/cluster.sh" down >/dev/null 2>&1 || true
	if [[ $rc -eq 0 ]]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries -----------------------------------------------------------------------------
log "building the operator ($PROFILE) and the test servers"
if [[ "$PROFILE" == release ]]; then
	cargo build --release -q -p unified-connectors --bin unified-connectors -p uc-testkit --bin uc-testkit
else
	cargo build -q -p unified-connectors --bin unified-connectors -p uc-testkit --bin uc-testkit
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/$([[ "$PROFILE" == release ]] && echo release || echo debug)"

# --- control plane, CRDs, Okta test server --------------------------------------------------
eval "$("$SCRIPTS/cluster.sh" up)"
OP_KUBECONFIG="$UC_CLUSTER_DIR/kubeconfig-operator"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
kubectl create namespace "$OP_NS" >/dev/null

"$TARGET/uc-testkit" serve --token "$TOKEN" --okta-rate-limit 100000000 --okta-org-rate-limit 100000000 \
	--counters-only --info-file "$WORK/testkit.json" >"$WORK/testkit.out" 2>"$WORK/testkit.log" &
TESTKIT_PID=$!
for _ in $(seq 1 100); do [[ -s "$WORK/testkit.json" ]] && break; sleep 0.2; done
OKTA_TEMPLATE="$(jq -r .okta.url_template "$WORK/testkit.json")"

# --- the objects, created before the operator starts -------------------------------------------
log "creating $CONNECTORS connectors over $DOMAINS domains with 3 bindings each in $NAMESPACES namespaces"
{
	for n in $(seq 0 $((NAMESPACES - 1))); do
		ns="bench-$n"
		printf -- '---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n' "$ns"
		printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: okta-token\n  namespace: %s\nstringData:\n  token: %s\n' "$ns" "$TOKEN"
		printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: splunk-token\n  namespace: %s\nstringData:\n  token: 11111111-2222-4333-8444-555555555555\n' "$ns"
		printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: webhook-secret\n  namespace: %s\nstringData:\n  secret: whsec_cmVwbGFjZS1tZS13aXRoLWEtcmFuZG9tLXNlY3JldA==\n' "$ns"
		printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: sentinel-credentials\n  namespace: %s\nstringData:\n  tenantId: 00000000-0000-4000-8000-000000000001\n  clientId: 00000000-0000-4000-8000-000000000002\n  clientSecret: bench\n' "$ns"
	done
} >"$WORK/base.yaml"
{
	for i in $(seq 0 $((CONNECTORS - 1))); do
		ns="bench-$((i % NAMESPACES))"
		c="c-$i"
		domain="org-$((i % DOMAINS)).bench.okta.com"
		printf -- '---\napiVersion: connectors.unified.dev/v1alpha1\nkind: UnifiedConnector\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  source:\n    okta:\n      domain: %s\n      credentialsSecretRef:\n        name: okta-token\n' "$c" "$ns" "$domain"
		printf -- '---\napiVersion: connectors.unified.dev/v1alpha1\nkind: ProductBinding\nmetadata:\n  name: %s-splunk\n  namespace: %s\nspec:\n  connectorRef:\n    name: %s\n  product:\n    splunkHec:\n      url: https://splunk.example.com:8088\n      tokenSecretRef:\n        name: splunk-token\n' "$c" "$ns" "$c"
		printf -- '---\napiVersion: connectors.unified.dev/v1alpha1\nkind: ProductBinding\nmetadata:\n  name: %s-webhook\n  namespace: %s\nspec:\n  connectorRef:\n    name: %s\n  product:\n    webhook:\n      url: https://hooks.example.com/okta\n      signingSecretRef:\n        name: webhook-secret\n        key: secret\n' "$c" "$ns" "$c"
		printf -- '---\napiVersion: connectors.unified.dev/v1alpha1\nkind: ProductBinding\nmetadata:\n  name: %s-sentinel\n  namespace: %s\nspec:\n  connectorRef:\n    name: %s\n  product:\n    sentinel:\n      endpoint: https://dce.eastus-1.ingest.monitor.azure.com\n      dcrImmutableId: dcr-00000000000000000000000000000001\n      streamName: Custom-OktaSystemLogs\n      credentialsSecretRef:\n        name: sentinel-credentials\n' "$c" "$ns" "$c"
	done
} >"$WORK/objects.yaml"
kubectl apply --server-side --field-manager=bench -f "$WORK/base.yaml" >/dev/null
t_create=$(now)
kubectl apply --server-side --field-manager=bench -f "$WORK/objects.yaml" >/dev/null
BINDINGS=$((CONNECTORS * 3))
log "created $CONNECTORS connectors and $BINDINGS bindings in $(elapsed "$t_create" "$(now)") s"

# --- run the operator ------------------------------------------------------------------------
audit_lines_before=$(wc -l <"$UC_CLUSTER_DIR/audit.log")
t0=$(now)
KUBECONFIG="$OP_KUBECONFIG" RUST_LOG=warn "$TARGET/unified-connectors" controller \
	--namespace "$OP_NS" --no-leader-election --metrics-addr 127.0.0.1:0 \
	--okta-url-template "$OKTA_TEMPLATE" >"$WORK/operator.log" 2>&1 &
OP_PID=$!

# reconciled: every object's status was written for its current generation.
count_reconciled() {
	kubectl get "$1" -A -o json |
		jq '[.items[] | select(.status.observedGeneration == .metadata.generation and .status.phase != null)] | length'
}
deadline=$(($(date +%s) + TIMEOUT))
while :; do
	kill -0 "$OP_PID" 2>/dev/null || { log "the operator exited:"; tail -20 "$WORK/operator.log" >&2; exit 1; }
	ucs=$(count_reconciled unifiedconnectors.connectors.unified.dev)
	pbs=$(count_reconciled productbindings.connectors.unified.dev)
	deps=$(kubectl get deployments -n "$OP_NS" --no-headers 2>/dev/null | wc -l)
	if [[ $ucs -eq $CONNECTORS && $pbs -eq $BINDINGS && $deps -eq $DOMAINS ]]; then break; fi
	if (($(date +%s) > deadline)); then
		log "not converged after ${TIMEOUT}s: $ucs/$CONNECTORS connectors, $pbs/$BINDINGS bindings, $deps/$DOMAINS collectors"
		exit 1
	fi
	sleep 1
done
t1=$(now)
converge_s=$(elapsed "$t0" "$t1")
# The polling above has 1 s granularity plus the time of a list: the figure is an upper bound.

# --- requests, memory, idle CPU, writes while idle ---------------------------------------------
sleep 3 # let in-flight status writes land before the idle window
audit_lines_converged=$(wc -l <"$UC_CLUSTER_DIR/audit.log")
ticks() { awk '{ print $14 + $15 }' "/proc/$OP_PID/stat"; }
c0=$(ticks)
sleep "$IDLE_SECONDS"
c1=$(ticks)
hz=$(getconf CLK_TCK)
idle_cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v s="$IDLE_SECONDS" 'BEGIN { printf "%.2f", 100 * d / hz / s }')
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$OP_PID/status")
rss_kib=$(awk '/VmRSS/ { print $2 }' "/proc/$OP_PID/status")

# One request = one auditID (watches log ResponseStarted and ResponseComplete).
requests_between() {
	sed -n "$(($1 + 1)),$2p" "$UC_CLUSTER_DIR/audit.log" | jq -r 'select(.user.username == "uc-operator") | .auditID' | sort -u | wc -l
}
writes_between() {
	sed -n "$(($1 + 1)),$2p" "$UC_CLUSTER_DIR/audit.log" |
		jq -r 'select(.user.username == "uc-operator" and (.verb | test("create|update|patch|delete"))) | "\(.auditID) \(.verb) \(.objectRef.resource)/\(.objectRef.name)"' | sort -u
}
audit_lines_end=$(wc -l <"$UC_CLUSTER_DIR/audit.log")
req=$(requests_between "$audit_lines_before" "$audit_lines_converged")
objects=$((CONNECTORS + BINDINGS))
idle_writes="$(writes_between "$audit_lines_converged" "$audit_lines_end")"
idle_write_count=$(grep -c . <<<"$idle_writes" || true)
idle_req=$(requests_between "$audit_lines_converged" "$audit_lines_end")

cat <<EOF

Operator scale benchmark ($PROFILE build, Kubernetes $(kubectl version -o json 2>/dev/null | jq -r .serverVersion.gitVersion), $(nproc) cores)
  objects                      $CONNECTORS connectors over $DOMAINS domains, $BINDINGS bindings, $NAMESPACES namespaces
  all reconciled after         ${converge_s} s  (target <= 60 s; includes $DOMAINS collector Deployments)
  API requests by operator     $req until converged = $(awk -v r="$req" -v o="$objects" 'BEGIN { printf "%.2f", r / o }') per object
  peak memory (VmHWM)          $((peak_kib / 1024)) MiB  (target < 150 MiB; RSS now $((rss_kib / 1024)) MiB)
  idle CPU after convergence   ${idle_cpu} % of one core over ${IDLE_SECONDS} s  (target ~0)
  requests while idle          $idle_req over ${IDLE_SECONDS}+ s; writes while idle: $idle_write_count (target 0: no reconcile loop)
EOF
if [[ $idle_write_count -gt 0 ]]; then
	echo "  idle writes (first 10):"
	head -10 <<<"$idle_writes" | sed 's/^/    /'
fi
