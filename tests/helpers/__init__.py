"""What the tests share: paths, running a tool as a user does, and comparing outputs
that two code paths summed in different orders.

Tool logic the tests call in-process lives in ``petah_mm.tools`` and is imported normally.
"""
import os
import subprocess
from pathlib import Path
from typing import Optional, Sequence

import torch

from .tool_server import Finished, run_forked

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / 'configs' / 'toy'
DET_TOY = TOY / 'cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py'
SEG_TOY = TOY / 'fpn_ef-l1-petah2_toy-ade20k.py'
CLS_TOY = TOY / 'ef-l1-petah2_toy-cls.py'
#: where the toy configs look for their data and "pretrained" backbone, relative to the working directory
TOY_DATA = dict(coco='data/toy_coco', ade20k='data/toy_ade20k', cls='data/toy_cls')
TOY_BACKBONE = 'data/toy_backbone/efficientformer-l1_seed0.pth'
#: ``--cfg-options`` for a toy detector that validates or tests after a few iterations: every box kept (no score
#: passes the usual 0.05 yet, and a validation without a box logs no metric), at RoI budgets a CPU test affords
#: (the defaults, 1,000 proposals and 100 boxes through three mask heads, cost ~10 s of CPU per image)
DET_TEST_OPTIONS = ('model.test_cfg.rcnn.score_thr=0.0', 'model.test_cfg.rcnn.max_per_img=12',
                    'model.test_cfg.rpn.max_per_img=40')


#: the CPUs this process may run on
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
#: torch threads of a test process and of the tools it runs: the CPUs shared out among pytest-xdist's workers
#: (pytest.ini starts one per CPU: 1 thread each), at most 2 (what the suite was written for). More would
#: oversubscribe the cores: OpenMP threads waiting for a core spin instead of yielding it.
THREADS = max(1, min(2, CPUS // int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))


def tool_env(env: Optional[dict] = None) -> dict:
    """The environment of a tool's process: this one's, THREADS threads, no display, this checkout first on the
    path."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MPLBACKEND='Agg', **(env or {}))
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    return env


def run_process(command: Sequence, cwd=REPO, env: Optional[dict] = None, timeout: int = 1200):
    """``command`` in a fresh process that imports this checkout's petah_mm (the finished process): for what
    needs a process of its own from the start (exit codes of a bad start, signals, torchrun, an environment
    read at import)."""
    return subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=tool_env(env))


def run_script(script, *args, cwd=REPO, timeout: int = 1200) -> Finished:
    """``python SCRIPT ARGS...`` as a user runs it, in a process of its own forked from a warm interpreter
    (:mod:`.tool_server`: the imports of torch and OpenMMLab are done); the finished process."""
    return run_forked(script, args, cwd, tool_env(), timeout)


def run(script, *args, cwd=REPO, timeout: int = 1200) -> str:
    """Run a Python tool script as a user would (``run_script``); fail with the end of its output, else
    return it."""
    proc = run_script(script, *args, cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, (f'{script} {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n'
                                  f'{proc.stderr[-3000:]}')
    return proc.stdout + proc.stderr


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, reduction_len: int, ulps: float = 8.,
                        msg: str = '') -> None:
    """``actual`` equals ``expected`` up to the rounding of sums of ``reduction_len`` terms taken in another order.

    Two code paths that compute the same sums (a convolution as oneDNN's direct kernel or as a GEMM, W x + B A x
    or (W + B A) x) round differently: each output element differs by a few units of the dtype's precision times
    the magnitude of what was summed, growing like the square root of the number of terms. The tolerance is
    ``ulps * eps * sqrt(reduction_len) * max|expected|``: it follows the outputs' scale, so it holds on any CPU,
    and stays orders of magnitude below what a wrong term would change. Pass the reduction length summed over
    the layers on the path (each layer's rounding adds). The failure message gives the largest difference, how
    many elements exceed the tolerance, and the tolerance.
    """
    assert actual.shape == expected.shape, f'{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}'
    actual, expected = actual.detach().double(), expected.detach().double()
    if not expected.numel():
        return
    scale = expected.abs().max().item()
    tolerance = ulps * torch.finfo(torch.float32).eps * reduction_len ** 0.5 * scale
    diff = (actual - expected).abs()
    worst = diff.max().item()
    off = int((diff > tolerance).sum())
    assert worst <= tolerance and torch.isfinite(actual).all(), (
        f'{msg + ": " if msg else ""}{off} of {diff.numel()} elements differ by more than the tolerance; largest '
        f'difference {worst:.3g} > tolerance {tolerance:.3g} (= {ulps:g} ulps x sqrt({reduction_len}) x max|expected| '
        f'{scale:.3g})')


def reduction_length(model: torch.nn.Module) -> int:
    """Terms summed per output element, added over every conv and linear layer of ``model``: what
    ``assert_close_scaled`` needs for a whole backbone, whose layers each round their own sums."""
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            total += module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            total += module.in_features
    return total


def build_model(cfg):
    """The whole model of a config, built in its default scope, loading no pretrained weights."""
    from mmengine.registry import MODELS, init_default_scope

    from petah_mm.models import without_pretrained
    init_default_scope(cfg.default_scope)
    return MODELS.build(dict(cfg.model, backbone=without_pretrained(cfg.model.backbone)))
