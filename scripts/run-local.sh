#!/usr/bin/env bash
# Runs pimbridge on this machine: a project-local Postgres (unless PIMBRIDGE_DATABASE__URL is set),
# the AWS SCIM emulator (unless PIMBRIDGE_CONFIG names your own configuration), migrations, and the
# service with config/example.toml. Prints a curl that sends a signed sample activation.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/postgres.sh
. scripts/postgres.sh

CONFIG=${PIMBRIDGE_CONFIG:-config/example.toml}
export PIMBRIDGE_CONFIG="$CONFIG"

echo "==> building"
cargo build --bins --quiet -p pimbridge -p aws-scim-emulator -p graph-emulator
BIN=target/debug

if [ -z "${PIMBRIDGE_DATABASE__URL:-}" ] && [ -z "${PIMBRIDGE_DATABASE__URL_FILE:-}" ]; then
  ensure_postgres
  PG_DIR=$(pg_dir "$PWD/.pimbridge/postgres")
  start_cluster "$PG_DIR" 55432
  pg_run psql -h 127.0.0.1 -p 55432 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'pimbridge'" | grep -q 1 \
    || pg_run psql -h 127.0.0.1 -p 55432 -U postgres -qc "CREATE DATABASE pimbridge"
fi

PIDS=()
# Stops what this run started: the service, the emulator and, if this run started it, Postgres
# (its data stays in the project directory for the next run).
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${PG_STARTED:-0}" = 1 ]; then stop_cluster "$PG_DIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$CONFIG" = config/example.toml ]; then
  echo "==> starting the AWS SCIM emulator on 127.0.0.1:9080"
  "$BIN/aws-scim-emulator" --listen 127.0.0.1:9080 &
  PIDS+=($!)
fi

"$BIN/pimbridge" migrate

cat <<MSG

==> pimbridge is starting on http://127.0.0.1:8080 (Ctrl-C stops everything); /metrics and
    /admin/ are on the internal listener, http://127.0.0.1:9090.
    Send a signed sample activation:

BODY='{"id":"sample-'\$(date +%s)'","type":"activation","occurredAt":"'\$(date -u +%FT%TZ)'","groupId":"6f1f6d3e-0000-4000-8000-00000000a0a0","principalId":"0b5e7a52-1111-4111-8111-000000000001","user":{"userName":"alice@contoso.com","givenName":"Alice","familyName":"Liddell","displayName":"Alice Liddell","email":"alice@contoso.com"},"group":{"displayName":"AWS-Admins"}}'
curl -sS http://127.0.0.1:8080/v1/events -H 'content-type: application/json' -H "x-pimbridge-signature: \$(printf %s "\$BODY" | $BIN/pimbridge --config $CONFIG sign)" -d "\$BODY"

    Then see the membership in the emulator:

curl -sS http://127.0.0.1:9080/_emulator/groups/by-name/AWS-Admins/members

MSG

"$BIN/pimbridge" serve &
PIDS+=($!)
wait -n "${PIDS[@]}"
