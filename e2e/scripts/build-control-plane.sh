#!/usr/bin/env bash
# Builds the test control plane (etcd, kube-apiserver, kube-controller-manager) and the
# helper tools (helm, kstatus) from Go modules, once, into a cache outside the repo:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/unified-connectors/control-plane/<k8s-version>-<hash>/bin/
# The hash covers the wrapper module's go.mod/go.sum, so a version bump builds into a fresh
# directory while a warm run only checks that the binaries exist. helm and kstatus are cached
# under tools-<hash>/ and linked into bin/.
# Prints the bin directory on the last line of stdout (callers use `tail -n1`).
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CP_MOD="$E2E_DIR/controlplane"
TOOLS_MOD="$E2E_DIR/tools"
KSTATUS_MOD="$E2E_DIR/kstatus"

log() { echo "[control-plane] $*" >&2; }

# The Kubernetes version is whatever the wrapper module pins: single source of truth.
K8S_VERSION="$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3} $1=="k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' "$CP_MOD/go.mod" | head -n1)"
[[ "$K8S_VERSION" =~ ^v([0-9]+)\.([0-9]+)\.([0-9]+) ]] || { log "cannot read k8s.io/kubernetes version from $CP_MOD/go.mod"; exit 1; }
GIT_MAJOR="${BASH_REMATCH[1]}"
GIT_MINOR="${BASH_REMATCH[2]}"

# Control plane and tools are cached apart, so editing the kstatus helper never rebuilds
# kube-apiserver: each cache key covers only its own module files.
CP_HASH="$(cat "$CP_MOD/go.mod" "$CP_MOD/go.sum" "$CP_MOD"/cmd/etcd/*.go | sha256sum | cut -c1-12)"
TOOLS_HASH="$(cat "$TOOLS_MOD/go.mod" "$TOOLS_MOD/go.sum" \
	"$KSTATUS_MOD/go.mod" "$KSTATUS_MOD/go.sum" "$KSTATUS_MOD"/*.go | sha256sum | cut -c1-12)"
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/unified-connectors/control-plane"
BIN_DIR="$CACHE_ROOT/${K8S_VERSION}-${CP_HASH}/bin"
TOOLS_DIR="$CACHE_ROOT/tools-${TOOLS_HASH}"
mkdir -p "$TOOLS_DIR"
mkdir -p "$BIN_DIR"

export CGO_ENABLED=0
# The modules are pinned by their committed go.sum; never let a build rewrite them.
export GOFLAGS="-mod=readonly -buildvcs=false"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

# Build date of this cache entry (reported by /version; only informative).
BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
VERSION_LDFLAGS=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	VERSION_LDFLAGS+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
	VERSION_LDFLAGS+=" -X ${pkg}.gitMajor=${GIT_MAJOR}"
	VERSION_LDFLAGS+=" -X ${pkg}.gitMinor=${GIT_MINOR}"
	VERSION_LDFLAGS+=" -X ${pkg}.gitTreeState=clean"
	VERSION_LDFLAGS+=" -X ${pkg}.buildDate=${BUILD_DATE}"
done

# build OUT_DIR NAME MODULE_DIR PACKAGE [EXTRA_LDFLAGS]: skip when the binary is already
# cached; build into a temp file and rename so an interrupted build never leaves a half binary.
build() {
	local out="$1" name="$2" dir="$3" pkg="$4" ldflags="${5:-}"
	if [[ -x "$out/$name" ]]; then
		log "$name: cached"
	else
		log "$name: building $pkg (cold builds take minutes)"
		local start=$SECONDS
		(cd "$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out/.$name.$$.tmp" "$pkg")
		mv -f "$out/.$name.$$.tmp" "$out/$name"
		log "$name: built in $((SECONDS - start))s"
	fi
	[[ "$out" == "$BIN_DIR" ]] || ln -sfn "$out/$name" "$BIN_DIR/$name"
}

build "$BIN_DIR" etcd "$CP_MOD" ./cmd/etcd
build "$BIN_DIR" kube-apiserver "$CP_MOD" k8s.io/kubernetes/cmd/kube-apiserver "$VERSION_LDFLAGS"
build "$BIN_DIR" kube-controller-manager "$CP_MOD" k8s.io/kubernetes/cmd/kube-controller-manager "$VERSION_LDFLAGS"
HELM_VERSION="$(awk '$1=="require" && $2=="helm.sh/helm/v3" {print $3} $1=="helm.sh/helm/v3" && $2 ~ /^v/ {print $2}' "$TOOLS_MOD/go.mod" | head -n1)"
build "$TOOLS_DIR" helm "$TOOLS_MOD" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
build "$TOOLS_DIR" kstatus "$KSTATUS_MOD" .

# A stable pointer for people and scripts that do not want to recompute the hash.
ln -sfn "$BIN_DIR" "$CACHE_ROOT/current"
log "Kubernetes $K8S_VERSION control plane binaries in $BIN_DIR"
echo "$BIN_DIR"
