#!/usr/bin/env bash
# The whole test suite from nothing: installs and starts Postgres, then fmt, clippy and every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/postgres.sh
. scripts/postgres.sh

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

ensure_postgres
PG_DIR=$(pg_dir "$PWD/target/test-postgres")
PG_PORT=${PIMBRIDGE_TEST_PG_PORT:-55433}
# fsync off for speed; commits still wait for the log to be written, as pimbridge expects (it warns
# at start-up when synchronous_commit is off).
PG_EXTRA_OPTS="-c fsync=off -c full_page_writes=off" start_cluster "$PG_DIR" "$PG_PORT"
trap 'stop_cluster "$PG_DIR"' EXIT
export PIMBRIDGE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"

echo "==> cargo deny (licences, bans, sources; deny.toml)"
# A missing tool fails the run: it is installed, never skipped.
if ! cargo deny --version >/dev/null 2>&1; then
  cargo install --locked cargo-deny
fi
cargo deny --locked check licenses bans sources

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo test"
RESULTS=$(mktemp)
cargo test --locked --workspace --all-targets --no-fail-fast 2>&1 | tee "$RESULTS"
read -r PASSED FAILED < <(awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } } END { print p + 0, f + 0 }' "$RESULTS")
rm -f "$RESULTS"

if [ -z "${PIMBRIDGE_SKIP_SMOKE:-}" ]; then
  echo "==> README smoke test (scripts/run-local.sh + the printed curl)"
  bash scripts/smoke-readme.sh
fi

echo "==> deployment checks (Helm chart, Dockerfile)"
bash scripts/check-deploy.sh

echo "tests: $PASSED passed, $FAILED failed"
