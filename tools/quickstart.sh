#!/usr/bin/env bash
# The README's first command: prepare .venv/ (once), then run the main job (PETAH-2 on the real EfficientNet-Lite0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
.venv/bin/python tools/main_job.py "$@"
