#!/usr/bin/env bash
# Install if needed (test dependencies + Debian Chromium), then run every test.
# Extra arguments go to pytest, e.g. -k video.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh --dev
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit $rc
