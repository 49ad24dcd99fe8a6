#!/usr/bin/env bash
# The README's first command: prepare .venv/ (once), then run the main job on generated toy data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
.venv/bin/python tools/main_job.py "$@"
