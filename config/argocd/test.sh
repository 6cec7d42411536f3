#!/usr/bin/env bash
# Tests the Argo CD health check (health.lua) with a real Lua interpreter over the cases in health_test.yaml,
# and that argocd-cm.yaml embeds the same script for both kinds.
#   config/argocd/test.sh           run the tests (installs lua5.4 and lua-yaml through apt-get if missing)
#   config/argocd/test.sh --write   regenerate argocd-cm.yaml from health.lua, then run the tests
#   config/argocd/test.sh --eval FILE   print what Argo CD would show for the live objects in FILE
#                                       (e.g. kubectl get uc,pb -A -o yaml > FILE)
set -euo pipefail
DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

have_lua() { command -v lua5.4 >/dev/null 2>&1 && lua5.4 -e 'require("lyaml")' >/dev/null 2>&1; }

if ! have_lua; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "[argocd] installing lua5.4 and lua-yaml" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >/dev/null
		apt-get install -y -qq lua5.4 lua-yaml >/dev/null
	else
		echo "[argocd] needs lua5.4 and the lyaml module: apt-get install lua5.4 lua-yaml" >&2
		exit 1
	fi
fi

write_cm() {
	# Lua source indented under a YAML literal block; empty lines stay empty.
	local indented
	indented="$(sed -e 's/^./    &/' "$DIR/health.lua")"
	cat <<YAML
# Argo CD health checks for unified-connectors. Generated from config/argocd/health.lua by
# 'config/argocd/test.sh --write': do not edit by hand. Merge the data keys into your argocd-cm ConfigMap
# (or into configs.cm of the argo-cd Helm chart).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
  resource.customizations.health.connectors.unified.dev_UnifiedConnector: |
$indented
  resource.customizations.health.connectors.unified.dev_ProductBinding: |
$indented
YAML
}

if [[ "${1:-}" == "--eval" ]]; then
	exec lua5.4 "$DIR/run_tests.lua" "$DIR" "${2:?usage: test.sh --eval FILE}"
fi

if [[ "${1:-}" == "--write" ]]; then
	write_cm >"$DIR/argocd-cm.yaml"
	echo "[argocd] wrote $DIR/argocd-cm.yaml" >&2
fi

lua5.4 "$DIR/run_tests.lua" "$DIR"
