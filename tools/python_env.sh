# Sourced by the dist_* and slurm_* launchers: sets REPO (the checkout) and PYTHON, the repository's
# .venv/bin/python when it exists (no need to activate the venv), else the python on PATH.
# An explicit PYTHON=... in the environment wins.
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python; fi
fi
