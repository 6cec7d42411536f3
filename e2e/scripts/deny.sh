#!/usr/bin/env bash
# The dependency tree's supply-chain checks with cargo-deny (policy: deny.toml at the repo root).
#
#   deny.sh      licences, bans (rsa, serde_yaml, openssl) and sources: always.
#                RustSec advisories: from the database cached under $CARGO_HOME/advisory-dbs, never
#                fetched (CI reaches package registries only; the database is a git repository).
#                Without a cached database the advisories check is skipped, and says so.
#
# cargo-deny is installed from crates.io when missing (cached in ~/.cargo/bin). Refresh the advisory
# database where git can reach GitHub with `cargo deny fetch db`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CARGO_DENY_VERSION=0.20.2
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"

log() { echo "[deny] $*" >&2; }

if ! command -v cargo-deny >/dev/null 2>&1 && [[ ! -x "$CARGO_HOME/bin/cargo-deny" ]]; then
	log "installing cargo-deny $CARGO_DENY_VERSION from crates.io (once; cached in $CARGO_HOME/bin)"
	cargo install --locked --quiet cargo-deny --version "$CARGO_DENY_VERSION"
fi
export PATH="$CARGO_HOME/bin:$PATH"

cd "$ROOT"
# Licences, bans and sources need only the crates' manifests; --locked keeps Cargo.lock as committed.
cargo deny --locked check licenses bans sources
log "ok: licences, bans and sources"

# A cached database is a git checkout under advisory-dbs/<name>-<hash>/.
db="$(find "$CARGO_HOME/advisory-dbs" -mindepth 2 -maxdepth 2 -name .git -print -quit 2>/dev/null || true)"
if [[ -n "$db" ]]; then
	cargo deny --locked --offline check advisories
	log "ok: advisories (offline, database $(dirname "$db"), $(git -C "$(dirname "$db")" log -1 --format=%cs 2>/dev/null || echo 'date unknown'))"
else
	log "SKIPPED advisories: no RustSec database cached under $CARGO_HOME/advisory-dbs and none can be fetched here;"
	log "        run 'cargo deny fetch db' on a machine that reaches GitHub (licences, bans and sources were still checked)"
fi
