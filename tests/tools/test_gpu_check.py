"""tools/analysis_tools/gpu_check.py: says plainly that there is no CUDA here, its checks pass with the CPU as
the device (on a GPU machine only the device changes), and all pass on a GPU machine."""
import sys

import pytest
import torch

from petah_mm.tools.analysis import gpu_check
from helpers import run_process


def run_gpu_check(tmp_path, **env):
    return run_process([sys.executable, 'tools/analysis_tools/gpu_check.py', '--work-dir', tmp_path], env=env,
                       timeout=3600)


def test_without_cuda_it_says_so_and_exits_cleanly(tmp_path):
    proc = run_gpu_check(tmp_path, CUDA_VISIBLE_DEVICES='')
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith('no CUDA: torch ') and 'nothing to check' in proc.stdout
    assert 'PASS' not in proc.stdout and 'FAIL' not in proc.stdout


@pytest.mark.slow
def test_its_checks_pass_with_the_cpu_as_the_device(monkeypatch):
    """All but the ``--amp`` training (test_amp runs it on the CPU) and the benchmark check, whose CPU runs
    test_benchmark covers (here it would take minutes)."""
    tool = gpu_check
    assert 'RoIAlign matches the CPU' in tool.check_mmcv_ops('cpu')
    assert 'bfloat16 worst relative error' in tool.check_backbone('cpu')
    monkeypatch.setattr(tool, 'has_bf16', lambda device: False)  # a T4 or V100: bf16 autocast would raise there
    # the branch without bf16 on one small image: the passes above checked the tool's own input, and the CPU
    # runs fp16 autocast slowly
    monkeypatch.setattr(tool, 'INPUT_SHAPE', (1, 3, 64, 64))
    without_bf16 = tool.check_backbone('cpu')
    monkeypatch.undo()
    assert 'bfloat16 not checked' in without_bf16 and 'float16 worst relative error' in without_bf16
    assert 'bfloat16 worst' not in without_bf16
    assert 'merged fp16' in tool.check_inference('cpu')


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_every_gpu_check_passes_on_a_cuda_machine(tmp_path):
    proc = run_gpu_check(tmp_path)
    assert proc.returncode == 0 and '5 of 5 checks passed' in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
