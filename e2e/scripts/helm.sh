#!/usr/bin/env bash
# The Helm chart's checks, with the helm binary built from its Go module by build-control-plane.sh.
#
#   helm.sh lint                 helm lint (defaults and every optional feature on), values.schema.json refuses
#                                bad values with a clear message, config/prometheus matches the chart's rules
#   helm.sh template [ARGS...]   render the chart as `helm install` would on the pinned Kubernetes version
#                                (release unified-connectors, namespace unified-connectors-system); ARGS go to helm
#   helm.sh prometheus           regenerate config/prometheus/prometheusrule.yaml from the chart
#   helm.sh path                 print the helm binary's path
#
# $HELM overrides the binary; otherwise build-control-plane.sh (cached after the first run) provides it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHART="$ROOT/charts/unified-connectors"
RELEASE=unified-connectors
NAMESPACE=unified-connectors-system
PROM_FILE="$ROOT/config/prometheus/prometheusrule.yaml"

log() { echo "[helm] $*" >&2; }

helm_bin() {
	if [[ -n "${HELM:-}" ]]; then
		echo "$HELM"
		return
	fi
	local bin="${UC_CONTROL_PLANE_BIN:-}"
	if [[ -z "$bin" ]]; then
		local errs
		errs="$(mktemp)"
		# Quiet when cached; its log is shown if it fails.
		bin="$("$ROOT/e2e/scripts/build-control-plane.sh" 2>"$errs" | tail -n1)" || { cat "$errs" >&2; rm -f "$errs"; exit 1; }
		rm -f "$errs"
	fi
	[[ -x "$bin/helm" ]] || { log "no helm in $bin: run make control-plane"; exit 1; }
	echo "$bin/helm"
}

# The Kubernetes version the control plane pins (e2e/controlplane/go.mod), e.g. v1.34.4.
kube_version() {
	awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3} $1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' \
		"$ROOT/e2e/controlplane/go.mod" | head -n1
}

template() {
	"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --kube-version "$(kube_version)" "$@"
}

# Every optional template on, so lint and template cover them too.
ALL_ON=(--set metrics.serviceMonitor.enabled=true --set collector.podMonitor.enabled=true
	--set prometheusRule.enabled=true --set grafanaDashboard.enabled=true --set networkPolicy.enabled=true
	--set-json 'networkPolicy.egress=[{"ports":[{"port":443,"protocol":"TCP"}]}]')

# The rules as kustomize users get them: the chart's PrometheusRule with default thresholds, minus Helm's labels.
render_prometheus() {
	echo "# Generated from charts/unified-connectors/templates/prometheusrule.yaml by 'e2e/scripts/helm.sh prometheus'"
	echo "# (default thresholds); 'make helm-lint' fails when it is stale. Needs the prometheus-operator CRDs."
	echo "apiVersion: monitoring.coreos.com/v1"
	echo "kind: PrometheusRule"
	echo "metadata:"
	echo "  name: unified-connectors"
	echo "  namespace: $NAMESPACE"
	echo "  labels:"
	echo "    app.kubernetes.io/name: unified-connectors"
	echo "    app.kubernetes.io/part-of: unified-connectors"
	template --set prometheusRule.enabled=true --show-only templates/prometheusrule.yaml | sed -n '/^spec:/,$p'
}

# expect_refusal WHAT PATTERN HELM-ARGS...: rendering must fail and say PATTERN.
expect_refusal() {
	local what="$1" pattern="$2" out
	shift 2
	if out="$(template "$@" 2>&1 >/dev/null)"; then
		log "FAIL: $what was accepted"
		return 1
	fi
	if ! grep -qE "$pattern" <<<"$out"; then
		log "FAIL: $what was refused without naming the problem ($pattern): $out"
		return 1
	fi
	log "ok: $what refused: $(grep -m1 -E "$pattern" <<<"$out" | sed 's/^ *//')"
}

# expect_rendered WHAT COUNT PATTERN HELM-ARGS...: the rendered chart has COUNT lines matching PATTERN.
expect_rendered() {
	local what="$1" want="$2" pattern="$3" out got
	shift 3
	out="$(template "$@")" || { log "FAIL: $what: the chart does not render"; return 1; }
	got="$(grep -cE "$pattern" <<<"$out" || true)"
	if [[ "$got" != "$want" ]]; then
		log "FAIL: $what: $got lines match '$pattern', expected $want"
		return 1
	fi
	log "ok: $what"
}

cmd_lint() {
	local failed=0 passed=0
	check() { if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi; }
	check "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" --kube-version "$(kube_version)"
	check "$HELM" lint --strict "$CHART" --namespace "$NAMESPACE" --kube-version "$(kube_version)" "${ALL_ON[@]}"
	check template "${ALL_ON[@]}" >/dev/null
	check expect_refusal "replicaCount=two" "replicaCount.*(integer|number)" --set-string replicaCount=two
	check expect_refusal "an unknown top-level key" "additional propert.*(replicas|not allowed)" --set replicas=3
	check expect_refusal "a misspelt nested key" "additional propert.*enable" --set prometheusRule.enable=true
	check expect_refusal "logFormat=xml" "logFormat" --set logFormat=xml
	check expect_refusal "deliveryTimeout=soon" "deliveryTimeout" --set deliveryTimeout=soon
	check expect_refusal "rateLimitUsedRatio=2" "rateLimitUsedRatio" --set prometheusRule.rateLimitUsedRatio=2
	check expect_refusal "two replicas without leader election" "leaderElection" --set leaderElection.enabled=false
	check expect_refusal "crds.enabled=yes" "crds.*enabled" --set-string crds.enabled=yes
	# The CRDs are templates (so helm upgrade upgrades them), kept on uninstall unless crds.keep=false.
	check expect_rendered "every CRD rendered by default" "$(ls "$ROOT"/crds/*.yaml | wc -l)" "^kind: CustomResourceDefinition"
	check expect_rendered "CRDs annotated resource-policy keep" "$(ls "$ROOT"/crds/*.yaml | wc -l)" "helm.sh/resource-policy: keep"
	check expect_rendered "crds.keep=false drops the keep annotation" 0 "helm.sh/resource-policy: keep" --set crds.keep=false
	check expect_rendered "crds.enabled=false renders no CRD" 0 "^kind: CustomResourceDefinition" --set crds.enabled=false
	# Collector pod settings: a ConfigMap the operator reads, only when something is set.
	check expect_rendered "no collector pod settings by default" 0 "collector-pod-settings"
	check expect_rendered "collector.pod settings reach the operator" 1 "^ +- --collector-pod-settings=/" \
		--set collector.pod.nodeSelector.pool=security
	check expect_rendered "imagePullSecrets reach the collectors too" 1 "^ +settings.yaml: " \
		--set 'imagePullSecrets[0].name=regcred'
	check expect_refusal "a relative collector.pod.extraCaFile" "extraCaFile" --set collector.pod.extraCaFile=ca.pem
	check expect_refusal "a misspelt collector.pod key" "additional propert.*nodeSelektor" --set collector.pod.nodeSelektor.a=b
	if diff -u "$PROM_FILE" <(render_prometheus) >&2; then
		passed=$((passed + 1))
		log "ok: config/prometheus matches the chart"
	else
		failed=$((failed + 1))
		log "FAIL: $PROM_FILE is stale: run e2e/scripts/helm.sh prometheus"
	fi
	echo "helm: $passed passed, $failed failed"
	((failed == 0))
}

HELM="$(helm_bin)"
case "${1:-}" in
lint) cmd_lint ;;
template)
	shift
	template "$@"
	;;
prometheus)
	render_prometheus >"$PROM_FILE"
	log "wrote $PROM_FILE"
	;;
path) echo "$HELM" ;;
*)
	echo "usage: $0 lint | template [HELM-ARGS...] | prometheus | path" >&2
	exit 2
	;;
esac
