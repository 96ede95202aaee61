#!/usr/bin/env bash
# Install if needed, then start the app on the built-in sample clip (http://127.0.0.1:7860).
# Extra arguments go to app.py, e.g. --port 7861 or --host 0.0.0.0.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python app.py "$@"
