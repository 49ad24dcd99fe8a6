"""tools/analysis_tools/gpu_check.py: says plainly that there is no CUDA here, and passes on a GPU machine."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / 'tools' / 'analysis_tools' / 'gpu_check.py'


def run_gpu_check(tmp_path, **env):
    return subprocess.run([sys.executable, str(TOOL), '--work-dir', str(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=3600, env=dict(os.environ, PYTHONPATH=str(REPO), **env))


def test_without_cuda_it_says_so_and_exits_cleanly(tmp_path):
    proc = run_gpu_check(tmp_path, CUDA_VISIBLE_DEVICES='')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('no CUDA: torch ') and 'nothing to check' in proc.stdout
    assert 'PASS' not in proc.stdout and 'FAIL' not in proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_every_gpu_check_passes_on_a_cuda_machine(tmp_path):
    proc = run_gpu_check(tmp_path)
    assert proc.returncode == 0 and '4 of 4 checks passed' in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
