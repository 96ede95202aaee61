#!/usr/bin/env bash
# Create/update the project virtualenv (.venv) when needed. Idempotent: a stamp holds the hash of the
# requirement files, so a second run with nothing changed takes well under a second.
#   bash scripts/bootstrap.sh          runtime dependencies (requirements.txt)
#   bash scripts/bootstrap.sh --dev    + test dependencies (requirements-dev.txt) and Debian Chromium
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[[ "${1:-}" == "--dev" ]] && DEV=1
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: Python >= 3.11 is needed ($PY is $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
REQ=requirements.txt
[[ $DEV == 1 ]] && REQ=requirements-dev.txt
if [[ ! -x .venv/bin/python ]]; then
  echo "[bootstrap] creating .venv with $("$PY" --version)"
  "$PY" -m venv .venv
fi
STAMP=".venv/.stamp-$(basename "$REQ" .txt)"
HASH="$(cat requirements.txt "$REQ" | sha256sum | cut -d' ' -f1)"
DEV_STAMP=".venv/.stamp-requirements-dev"
DEV_HASH="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [[ $DEV == 0 && -f "$DEV_STAMP" && "$(cat "$DEV_STAMP")" == "$DEV_HASH" ]]; then
  :  # the dev install (a superset of requirements.txt) is current
elif [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$HASH" ]]; then
  echo "[bootstrap] installing $REQ into .venv (torch + torchvision as a matched pair from the registry)"
  start=$(date +%s)
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r "$REQ"
  # guard: a CPU-only torch wheel mixed with the registry's torchvision breaks torchvision::nms
  .venv/bin/python -c "import torch, torchvision; from torchvision.ops import nms; nms(torch.zeros(1,4), torch.zeros(1), 0.5)" \
    || { echo "error: torch/torchvision mismatch in .venv (see requirements.txt)" >&2; exit 1; }
  echo "$HASH" > "$STAMP"
  echo "[bootstrap] installed in $(( $(date +%s) - start )) s"
fi
if [[ $DEV == 1 ]] && [[ ! -x /usr/bin/chromium ]]; then
  echo "[bootstrap] installing Debian chromium + chromium-driver for the browser tests"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
exit 0
