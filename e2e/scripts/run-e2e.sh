#!/usr/bin/env bash
# `make e2e`: the end-to-end suite on a fresh, private control plane.
# Brings a cluster up in its own state dir, runs the Rust e2e tests against it (they are
# #[ignore]d so plain `cargo test` skips them), and tears the cluster down on exit, failure
# or interrupt. Extra arguments go to the test binary (e.g. a test name filter).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SCRIPTS="$ROOT/e2e/scripts"
cd "$ROOT"

BIN="${UC_CONTROL_PLANE_BIN:-$("$SCRIPTS/build-control-plane.sh" | tail -n1)}"
export UC_CONTROL_PLANE_BIN="$BIN"
export UC_KSTATUS="${UC_KSTATUS:-$BIN/kstatus}"

# A private state dir: never reuse (or destroy) a cluster a person started with `make cluster-up`.
UC_CLUSTER_DIR="${UC_E2E_CLUSTER_DIR:-$(mktemp -u /tmp/uc-e2e.XXXXXX)}"
export UC_CLUSTER_DIR

TEST_PID=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	# On interrupt the tests die without running their Drop guards: end their whole process
	# group (test binary, operator and collector children) before the cluster goes.
	if [[ -n "$TEST_PID" ]] && kill -0 "$TEST_PID" 2>/dev/null; then
		kill -TERM -- "-$TEST_PID" 2>/dev/null || kill -TERM "$TEST_PID" 2>/dev/null || true
		wait "$TEST_PID" 2>/dev/null || true
	fi
	if [[ -n "${UC_E2E_KEEP_CLUSTER:-}" ]]; then
		echo "[e2e] keeping the cluster: UC_CLUSTER_DIR=$UC_CLUSTER_DIR $SCRIPTS/cluster.sh down" >&2
	else
		"$SCRIPTS/cluster.sh" down || true
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

eval "$("$SCRIPTS/cluster.sh" up)"
echo "[e2e] cluster up, KUBECONFIG=$KUBECONFIG" >&2

# The operator and collector binaries are built by cargo as part of the test target. The
# tests run in their own process group, in the background, so that a signal reaches the traps
# at once (bash defers traps while a foreground child runs) and can end the whole group.
setsid cargo test -p unified-connectors --test e2e -- --ignored --test-threads=1 "$@" &
TEST_PID=$!
wait "$TEST_PID"
