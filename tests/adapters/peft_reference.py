"""Run a script against peft 0.21, isolated from the test process, and return what it saved.

peft pulls in transformers, and an importable transformers breaks ``import mmpretrain.models`` (so petah_mm):
peft is installed into its own directory (``pip install --no-deps --target`` by tools/install.sh),
never into the environment, and only a subprocess puts that directory on its path. The script gets
the tensors the test saved and saves peft's results; it must not import petah_mm.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

#: where tools/install.sh installs peft 0.21 and its dependencies (requirements/peft.txt), with its defaults
CACHE_DIR = Path(os.environ.get('PETAH_MM_CACHE', Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
                                / 'petah_mm'))
PEFT_DIR = Path(os.environ.get('PETAH_MM_PEFT_DIR', CACHE_DIR / 'peft-0.21'))


def run_with_peft(script: str, inputs: dict, tmp_path: Path) -> dict:
    """Run ``script`` (which reads ``INPUTS`` and writes ``OUTPUTS`` with torch.save) under peft; skips the
    calling test when peft is not installed in :data:`PEFT_DIR`."""
    if not (PEFT_DIR / 'peft').is_dir():
        pytest.skip(f'peft 0.21 is not installed in {PEFT_DIR} (run tools/install.sh, which installs it there, '
                    'or set PETAH_MM_PEFT_DIR): the comparison with peft needs it')
    inputs_path, outputs_path = tmp_path / 'inputs.pt', tmp_path / 'outputs.pt'
    torch.save(inputs, inputs_path)
    prologue = (f'import sys, torch\nsys.path.insert(0, {str(PEFT_DIR)!r})\nimport peft\n'
                f"assert peft.__version__.startswith('0.21'), peft.__version__\n"
                f'INPUTS = torch.load({str(inputs_path)!r})\nOUTPUTS = {str(outputs_path)!r}\n')
    proc = subprocess.run([sys.executable, '-c', prologue + script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f'the peft script failed:\n{proc.stderr[-3000:]}'
    return torch.load(outputs_path)
