#!/usr/bin/env bash
# `make bench-operator`: the operator at scale on the local control plane, with a live fleet.
#
# Scales (BENCH_SCALE):
#   live     (default) 1,000 sources, one connector each, 3 bindings per connector
#   big      10,000 connectors over 2,000 sources, 30,000 bindings
#   classic  1,000 connectors over 200 sources, 3,000 bindings (the issue-3 benchmark)
# UC_BENCH_CONNECTORS / UC_BENCH_DOMAINS / UC_BENCH_NAMESPACES override a scale's sizes.
#
# Phase 1, convergence (no collector runs): the objects are created, then the operator (release
# build) starts. Prints the time until every connector and binding is reconciled at its
# generation and every source has its collector Deployment; API requests per object; peak
# memory; CPU and writes while idle (a reconcile loop would keep writing).
#
# Phase 2, the live fleet (UC_BENCH_FLEET=0 skips it): operator/examples/fleet_load.rs plays
# one collector per source, writing its state ConfigMap (report.json + positions.json) at the
# collector's cadence, and makes products fail and recover. Once every binding is Ready, over a
# steady window of UC_BENCH_STEADY_SECONDS (measured anyway when they are not all Ready within
# UC_BENCH_READY_TIMEOUT, 180 s) it prints, from the API server's audit log and the
# operator's /metrics: the operator's CPU and memory; API requests and writes per minute by
# verb and resource (operator and collectors apart); status writes per object per minute;
# reconciles per minute; and the time from a report change to the binding's status showing it
# (median, p99).
#   UC_BENCH_REPORT_MODE      always (default: today's collector, every interval, changed or
#                             not) | on-change (on a change, plus a heartbeat)
#   UC_BENCH_REPORT_INTERVAL  5s     UC_BENCH_HEARTBEAT 40s
#   UC_BENCH_FAILURES_PER_MINUTE  10 (across the fleet; each recovers after UC_BENCH_OUTAGE,
#                             in seconds: 30s)
#
# Targets (issue 10): live: operator < 2% of a core at steady state, API writes <= 1 per
# collector per minute on average plus the status changes, a phase change in status within
# 5 s; big: converged within 120 s, peak memory < 300 MiB, no reconcile loop after convergence.
# (classic, issue 3: within 60 s, < 150 MiB.) This is a benchmark: it prints, it does not fail
# on a missed target (only if convergence never happens).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS="$ROOT/e2e/scripts"
cd "$ROOT"

SCALE="${BENCH_SCALE:-live}"
case "$SCALE" in
live) d_conn=1000 d_dom=1000 d_ns=10 d_timeout=900 ;;
big) d_conn=10000 d_dom=2000 d_ns=20 d_timeout=1800 ;;
classic) d_conn=1000 d_dom=200 d_ns=10 d_timeout=600 ;;
*)
	echo "BENCH_SCALE must be live, big or classic (got '$SCALE')" >&2
	exit 2
	;;
esac
CONNECTORS="${UC_BENCH_CONNECTORS:-$d_conn}"
DOMAINS="${UC_BENCH_DOMAINS:-$d_dom}"
NAMESPACES="${UC_BENCH_NAMESPACES:-$d_ns}"
TIMEOUT="${UC_BENCH_TIMEOUT:-$d_timeout}"
IDLE_SECONDS="${UC_BENCH_IDLE_SECONDS:-20}"
PROFILE="${UC_BENCH_PROFILE:-release}"
FLEET="${UC_BENCH_FLEET:-1}"
STEADY_SECONDS="${UC_BENCH_STEADY_SECONDS:-120}"
READY_TIMEOUT="${UC_BENCH_READY_TIMEOUT:-180}"
REPORT_MODE="${UC_BENCH_REPORT_MODE:-always}"
REPORT_INTERVAL="${UC_BENCH_REPORT_INTERVAL:-5s}"
HEARTBEAT="${UC_BENCH_HEARTBEAT:-40s}"
FAILURES_PER_MINUTE="${UC_BENCH_FAILURES_PER_MINUTE:-10}"
OUTAGE="${UC_BENCH_OUTAGE:-30s}"
OP_NS=uc-bench-system
TOKEN=00bench-okta-token

log() { echo "[bench-operator] $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

WORK="$(mktemp -d /tmp/uc-bench.XXXXXX)"
export UC_CLUSTER_DIR="$WORK/cluster"
export UC_CLUSTER_AUDIT=1
OP_PID=""
TESTKIT_PID=""
FLEET_PID=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "$FLEET_PID" "$OP_PID" "$TESTKIT_PID"; do
		[[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	done
	"$SCRIPTS/cluster.sh" down >/dev/null 2>&1 || true
	if [[ $rc -eq 0 && -z "${UC_BENCH_KEEP:-}" ]]; then rm -rf "$WORK"; else log "logs kept in $WORK"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries -----------------------------------------------------------------------------
log "building the operator ($PROFILE), the test servers and the fleet"
if [[ "$PROFILE" == release ]]; then
	cargo build --release -q -p unified-connectors --bin unified-connectors --example fleet_load -p uc-testkit --bin uc-testkit
else
	cargo build -q -p unified-connectors --bin unified-connectors --example fleet_load -p uc-testkit --bin uc-testkit
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/$([[ "$PROFILE" == release ]] && echo release || echo debug)"

# --- control plane, CRDs, Okta test server --------------------------------------------------
eval "$("$SCRIPTS/cluster.sh" up)"
OP_KUBECONFIG="$UC_CLUSTER_DIR/kubeconfig-operator"
AUDIT="$UC_CLUSTER_DIR/audit.log"
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
# One file per namespace, applied four at a time (40,000 objects one by one take too long).
mkdir -p "$WORK/objects"
awk -v n="$CONNECTORS" -v doms="$DOMAINS" -v nss="$NAMESPACES" -v dir="$WORK/objects" 'BEGIN {
	for (i = 0; i < n; i++) {
		ns = "bench-" (i % nss); c = "c-" i; f = dir "/" ns ".yaml"
		printf "---\napiVersion: connectors.unified.dev/v1alpha1\nkind: UnifiedConnector\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  source:\n    okta:\n      domain: org-%d.bench.okta.com\n      credentialsSecretRef:\n        name: okta-token\n", c, ns, i % doms > f
		printf "---\napiVersion: connectors.unified.dev/v1alpha1\nkind: ProductBinding\nmetadata:\n  name: %s-splunk\n  namespace: %s\nspec:\n  connectorRef:\n    name: %s\n  product:\n    splunkHec:\n      url: https://splunk.example.com:8088\n      tokenSecretRef:\n        name: splunk-token\n", c, ns, c > f
		printf "---\napiVersion: connectors.unified.dev/v1alpha1\nkind: ProductBinding\nmetadata:\n  name: %s-webhook\n  namespace: %s\nspec:\n  connectorRef:\n    name: %s\n  product:\n    webhook:\n      url: https://hooks.example.com/okta\n      signingSecretRef:\n        name: webhook-secret\n        key: secret\n", c, ns, c > f
		printf "---\napiVersion: connectors.unified.dev/v1alpha1\nkind: ProductBinding\nmetadata:\n  name: %s-sentinel\n  namespace: %s\nspec:\n  connectorRef:\n    name: %s\n  product:\n    sentinel:\n      endpoint: https://dce.eastus-1.ingest.monitor.azure.com\n      dcrImmutableId: dcr-00000000000000000000000000000001\n      streamName: Custom-OktaSystemLogs\n      credentialsSecretRef:\n        name: sentinel-credentials\n", c, ns, c > f
	}
}'
kubectl apply --server-side --field-manager=bench -f "$WORK/base.yaml" >/dev/null
t_create=$(now)
ls "$WORK"/objects/*.yaml | xargs -P 4 -I{} kubectl apply --server-side --field-manager=bench -f {} >/dev/null
BINDINGS=$((CONNECTORS * 3))
log "created $CONNECTORS connectors and $BINDINGS bindings in $(elapsed "$t_create" "$(now)") s"

# --- run the operator ------------------------------------------------------------------------
METRICS_PORT="$(free_port)"
audit_lines_before=$(wc -l <"$AUDIT")
t0=$(now)
KUBECONFIG="$OP_KUBECONFIG" RUST_LOG=warn "$TARGET/unified-connectors" controller \
	--namespace "$OP_NS" --no-leader-election --metrics-addr "127.0.0.1:$METRICS_PORT" \
	--okta-url-template "$OKTA_TEMPLATE" >"$WORK/operator.log" 2>&1 &
OP_PID=$!

# reconciled: every object's status was written for its current generation.
count_reconciled() {
	kubectl get "$1" -A -o json |
		jq '[.items[] | select(.status.observedGeneration == .metadata.generation and .status.phase != null)] | length'
}
count_phase() {
	kubectl get "$1" -A -o json | jq --arg p "$2" '[.items[] | select(.status.phase == $p)] | length'
}
operator_alive() {
	kill -0 "$OP_PID" 2>/dev/null || { log "the operator exited:"; tail -20 "$WORK/operator.log" >&2; exit 1; }
}
deadline=$(($(date +%s) + TIMEOUT))
while :; do
	operator_alive
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
audit_lines_converged=$(wc -l <"$AUDIT")
ticks() { awk '{ print $14 + $15 }' "/proc/$OP_PID/stat"; }
hz=$(getconf CLK_TCK)
cpu_percent() { awk -v d=$(($2 - $1)) -v hz="$hz" -v s="$3" 'BEGIN { printf "%.2f", 100 * d / hz / s }'; }
c0=$(ticks)
sleep "$IDLE_SECONDS"
c1=$(ticks)
idle_cpu=$(cpu_percent "$c0" "$c1" "$IDLE_SECONDS")
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$OP_PID/status")
rss_kib=$(awk '/VmRSS/ { print $2 }' "/proc/$OP_PID/status")

# Audit lines $1+1..$2 as JSON events, completed requests only (watches also log ResponseStarted).
audit_between() { sed -n "$(($1 + 1)),$2p" "$AUDIT" | jq -c 'select(.stage == "ResponseComplete")'; }
OPERATOR='.user.username == "uc-operator"'
FLEET_UA='(.userAgent // "" | startswith("uc-fleet-load"))'
WRITE='(.verb | test("^(create|update|patch|delete|deletecollection)$"))'
requests_between() { audit_between "$1" "$2" | jq -r "select($OPERATOR) | .auditID" | sort -u | wc -l; }
writes_between() {
	audit_between "$1" "$2" |
		jq -r "select($OPERATOR and $WRITE) | \"\(.auditID) \(.verb) \(.objectRef.resource)/\(.objectRef.name)\"" | sort -u
}
audit_lines_end=$(wc -l <"$AUDIT")
req=$(requests_between "$audit_lines_before" "$audit_lines_converged")
objects=$((CONNECTORS + BINDINGS))
idle_writes="$(writes_between "$audit_lines_converged" "$audit_lines_end")"
idle_write_count=$(grep -c . <<<"$idle_writes" || true)
idle_req=$(requests_between "$audit_lines_converged" "$audit_lines_end")

cat <<EOF

Operator scale benchmark, scale $SCALE ($PROFILE build, Kubernetes $(kubectl version -o json 2>/dev/null | jq -r .serverVersion.gitVersion), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg))
  objects                      $CONNECTORS connectors over $DOMAINS sources, $BINDINGS bindings, $NAMESPACES namespaces
Convergence (no collector running)
  all reconciled after         ${converge_s} s  (big target <= 120 s; includes $DOMAINS collector Deployments)
  API requests by operator     $req until converged = $(awk -v r="$req" -v o="$objects" 'BEGIN { printf "%.2f", r / o }') per object
  peak memory (VmHWM)          $((peak_kib / 1024)) MiB  (big target < 300 MiB; RSS now $((rss_kib / 1024)) MiB)
  idle CPU after convergence   ${idle_cpu} % of one core over ${IDLE_SECONDS} s  (target ~0)
  requests while idle          $idle_req over ${IDLE_SECONDS}+ s; writes while idle: $idle_write_count (target 0: no reconcile loop)
EOF
if [[ $idle_write_count -gt 0 ]]; then
	echo "  idle writes (first 10):"
	head -10 <<<"$idle_writes" | sed 's/^/    /'
fi
[[ "$FLEET" == 1 ]] || exit 0

# --- phase 2: the live fleet ---------------------------------------------------------------------
reconciles() {
	curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" |
		awk '/^unified_connectors_reconciliations_total/ { s += $NF } END { printf "%d", s }'
}
log "starting the fleet: $DOMAINS collectors, mode $REPORT_MODE (interval $REPORT_INTERVAL, heartbeat $HEARTBEAT), $FAILURES_PER_MINUTE failures a minute"
RESULTS="$WORK/changes.jsonl"
t_fleet=$(now)
"$TARGET/examples/fleet_load" --namespace "$OP_NS" --collectors "$DOMAINS" --mode "$REPORT_MODE" \
	--interval "$REPORT_INTERVAL" --heartbeat "$HEARTBEAT" --failures-per-minute "$FAILURES_PER_MINUTE" \
	--outage "$OUTAGE" --results "$RESULTS" >"$WORK/fleet.log" 2>&1 &
FLEET_PID=$!
ready_deadline=$(($(date +%s) + READY_TIMEOUT))
failing_margin=$(awk -v f="$FAILURES_PER_MINUTE" -v o="${OUTAGE%s}" 'BEGIN { printf "%d", f * o / 60 + 2 }')
while :; do
	operator_alive
	kill -0 "$FLEET_PID" 2>/dev/null || { log "the fleet exited:"; tail -20 "$WORK/fleet.log" >&2; exit 1; }
	ready=$(count_phase productbindings.connectors.unified.dev Ready)
	# Some are failing on purpose at any moment: about failures a minute x outage.
	if ((ready >= BINDINGS - failing_margin)); then break; fi
	if (($(date +%s) > ready_deadline)); then
		log "only $ready/$BINDINGS bindings Ready after ${READY_TIMEOUT}s with the fleet running; measuring anyway"
		break
	fi
	sleep 2
done
ready_s=$(elapsed "$t_fleet" "$(now)")
log "$ready/$BINDINGS bindings Ready ${ready_s} s after the fleet started; steady window of ${STEADY_SECONDS} s"
sleep 10 # past the first-report burst
w_start_unix=$(date +%s.%N)
w_lines0=$(wc -l <"$AUDIT")
r0=$(reconciles)
c0=$(ticks)
sleep "$STEADY_SECONDS"
c1=$(ticks)
r1=$(reconciles)
w_lines1=$(wc -l <"$AUDIT")
w_end_unix=$(date +%s.%N)
steady_cpu=$(cpu_percent "$c0" "$c1" "$STEADY_SECONDS")
peak_kib=$(awk '/VmHWM/ { print $2 }' "/proc/$OP_PID/status")
rss_kib=$(awk '/VmRSS/ { print $2 }' "/proc/$OP_PID/status")
phases=$(kubectl get productbindings.connectors.unified.dev -A -o json |
	jq -r '[.items[] | "\(.status.phase) \(.status.conditions[]? | select(.type == "Ready") | .reason)"] | group_by(.) | map("\(length) \(.[0])") | join(", ")')
sleep 15 # let the window's last changes show, then stop the fleet
kill "$FLEET_PID" 2>/dev/null && wait "$FLEET_PID" 2>/dev/null || true
FLEET_PID=""

minutes=$(awk -v s="$STEADY_SECONDS" 'BEGIN { print s / 60 }')
audit_between "$w_lines0" "$w_lines1" >"$WORK/window.jsonl"
per_min() { awk -v n="$1" -v m="$minutes" 'BEGIN { printf "%.1f", n / m }'; }
# "verb resource[/subresource]" counts per minute for one selection.
breakdown() {
	jq -r "select($1) | \"\(.verb) \(.objectRef.resource // .requestURI)\(if .objectRef.subresource then \"/\" + .objectRef.subresource else \"\" end)\"" "$WORK/window.jsonl" |
		sort | uniq -c | sort -rn | head -12 |
		awk -v m="$minutes" '{ printf "    %10.1f /min  %s %s\n", $1 / m, $2, $3 }'
}
count() { jq -c "select($1)" "$WORK/window.jsonl" | wc -l; }
op_req=$(count "$OPERATOR")
op_writes=$(count "$OPERATOR and $WRITE")
fleet_writes=$(count "$FLEET_UA and $WRITE")
status_writes=$(count "$OPERATOR and $WRITE and .objectRef.subresource == \"status\"")
all_writes=$(count "$WRITE")
status_per_obj=$(awk -v n="$status_writes" -v o="$objects" -v m="$minutes" 'BEGIN { printf "%.3f", n / o / m }')
writes_per_collector=$(awk -v n="$all_writes" -v c="$DOMAINS" -v m="$minutes" 'BEGIN { printf "%.2f", n / c / m }')
nonstatus_per_collector=$(awk -v n="$((all_writes - status_writes))" -v c="$DOMAINS" -v m="$minutes" 'BEGIN { printf "%.2f", n / c / m }')

# Report changes written inside the window (the last 15 s had time to show after it).
latency=$(jq -s --argjson a "$w_start_unix" --argjson b "$w_end_unix" '
	[.[] | select(.sent != null and .sent >= $a and .sent <= $b)] as $in
	| ([$in[] | select(.seen != null) | .seen - .sent] | sort) as $l
	| def q(p): if ($l | length) == 0 then null else $l[((($l | length) - 1) * p | floor)] end;
	{ changes: ($in | length), shown: ($l | length), missed: ([$in[] | select(.seen == null)] | length),
	  median: q(0.5), p99: q(0.99), max: q(1) }' "$RESULTS")
fmt_s() { jq -r "if .$1 == null then \"-\" else (.$1 * 1000 | round / 1000 | tostring) + \" s\" end" <<<"$latency"; }

cat <<EOF
Live fleet ($DOMAINS collectors writing report.json + positions.json: mode $REPORT_MODE, interval $REPORT_INTERVAL, heartbeat $HEARTBEAT; $FAILURES_PER_MINUTE product failures a minute, each recovering after $OUTAGE)
  bindings Ready after         ${ready_s} s from the fleet's start ($ready/$BINDINGS)
  steady window                ${STEADY_SECONDS} s; bindings at its end: $phases
  operator CPU                 ${steady_cpu} % of one core  (live target < 2 %)
  operator memory              RSS $((rss_kib / 1024)) MiB, peak (VmHWM) $((peak_kib / 1024)) MiB
  reconciles                   $(per_min $((r1 - r0))) /min (unified_connectors_reconciliations_total)
  API requests by operator     $(per_min "$op_req") /min, of which writes $(per_min "$op_writes") /min
$(breakdown "$OPERATOR")
  API writes by the collectors $(per_min "$fleet_writes") /min = $(awk -v n="$fleet_writes" -v c="$DOMAINS" -v m="$minutes" 'BEGIN { printf "%.2f", n / c / m }') per collector per minute
$(breakdown "$FLEET_UA and $WRITE")
  all API writes               $(per_min "$all_writes") /min = $writes_per_collector per collector per minute; without status writes $nonstatus_per_collector  (live target <= 1 plus the status changes)
  status writes per object     $status_per_obj per minute ($status_writes in the window over $objects objects)
  report change -> status      median $(fmt_s median), p99 $(fmt_s p99), max $(fmt_s max) over $(jq .shown <<<"$latency") of $(jq .changes <<<"$latency") changes; $(jq .missed <<<"$latency") not shown within 60 s  (live target <= 5 s)
EOF
