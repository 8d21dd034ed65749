#!/usr/bin/env bash
# Checks the README's promise end to end: scripts/run-local.sh starts everything, the sample curl
# it prints is accepted, and the membership appears in the emulator within a second.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG=target/run-local.log
mkdir -p target
scripts/run-local.sh > "$LOG" 2>&1 &
RUNNER=$!
trap 'kill $RUNNER 2>/dev/null || true; wait $RUNNER 2>/dev/null || true' EXIT

for _ in $(seq 1 600); do
  curl -fsS http://127.0.0.1:8080/health/ready >/dev/null 2>&1 && break
  kill -0 $RUNNER 2>/dev/null || { cat "$LOG"; echo "run-local.sh exited early" >&2; exit 1; }
  sleep 0.5
done
curl -fsS http://127.0.0.1:8080/health/ready >/dev/null || { cat "$LOG"; exit 1; }

# The exact commands the script printed.
BODY_LINE=$(grep '^BODY=' "$LOG")
CURL_LINE=$(grep '^curl -sS http://127.0.0.1:8080/v1/events' "$LOG")
START=$(date +%s%N)
eval "$BODY_LINE"
ANSWER=$(eval "$CURL_LINE")
echo "pimbridge answered: $ANSWER"
[[ "$ANSWER" == *'"accepted":1'* ]] || { echo "the sample was not accepted" >&2; exit 1; }

for _ in $(seq 1 100); do
  MEMBERS=$(curl -sS http://127.0.0.1:9080/_emulator/groups/by-name/AWS-Admins/members || true)
  if [[ "$MEMBERS" == *'alice@contoso.com'* ]]; then
    ELAPSED_MS=$(( ($(date +%s%N) - START) / 1000000 ))
    echo "membership visible in the emulator after ${ELAPSED_MS} ms: $MEMBERS"
    [ "$ELAPSED_MS" -le 1000 ] || { echo "slower than one second" >&2; exit 1; }
    exit 0
  fi
  sleep 0.01
done
echo "no membership in the emulator; the emulator says: $MEMBERS" >&2
exit 1
