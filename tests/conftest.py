"""Fixtures shared by every test folder: a fixed random state per test, and the expensive things built once
per session: the toy data and backbone once per pytest-xdist worker, one ``tools/train.py`` run per toy task
shared by all workers."""
import functools
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from mmengine.config import Config

from petah_mm.datasets import (TOY_CONFIGS, make_toy_ade20k, make_toy_backbone, make_toy_classification, make_toy_coco,
                               write_toy_user_config)
from petah_mm.tools.analysis.benchmark.ablations import peft_dir
from petah_mm.utils.fileio import atomic_write
from helpers import CLS_TOY, CPUS, DET_TEST_OPTIONS, DET_TOY, SEG_TOY, THREADS, TOY_BACKBONE, TOY_DATA, run


# processes a test starts without helpers.tool_env (gpu_check's runs of tools/train.py) keep to the worker's share
os.environ.setdefault('OMP_NUM_THREADS', str(THREADS))
# the worker's share from the start, not only per test (_deterministic_torch): module and session fixtures that compute
# reference outputs run before it, and a test comparing bit for bit must see the same summation order
torch.set_num_threads(THREADS)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (pytest.ini): one pytest-xdist worker per CPU, at most 4, since every worker builds the
    session's shared fixtures (toy runs, the tool server) for itself."""
    return min(4, CPUS)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    """Every test starts from the same random state (Python, NumPy, torch) and thread count."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    yield


@pytest.fixture(scope='session', autouse=True)
def memoised_config_paths():
    """mmengine re-reads mmpretrain's whole model index (~250 yaml files) for every ``mmpretrain::`` base it
    resolves; the answer is a pure function of its arguments, so it is memoised for the session."""
    original = Config.__dict__['_get_cfg_path']
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Config, '_get_cfg_path', staticmethod(functools.lru_cache(None)(original.__func__)))
        yield


@pytest.fixture(scope='session', autouse=True)
def session_cache(tmp_path_factory):
    """What the tests measure and cache (the unmerged inference forms) goes to a session directory, never to the
    user's ~/.cache/petah_mm; peft stays where tools/install.sh put it."""
    patch = pytest.MonkeyPatch()
    patch.setenv('PETAH_MM_PEFT_DIR', str(peft_dir()))
    patch.setenv('PETAH_MM_CACHE', str(tmp_path_factory.mktemp('petah_mm_cache')))
    yield
    patch.undo()


@pytest.fixture
def build_ef():
    """Build a PETAH EfficientFormer with small defaults; keyword arguments override."""
    from petah_mm.models import PETAHEfficientFormer

    def build(method='petah', arch='l1', **kwargs):
        adapter = dict(method=method, conv_rank=2)
        adapter.update(kwargs.pop('adapter', {}))
        return PETAHEfficientFormer(arch=arch, adapter=adapter, **kwargs)

    return build


# ------------------------------------------------------------------------------ toy data, backbone, runs


@pytest.fixture(scope='session')
def toy_workspace(tmp_path_factory) -> Path:
    """A working directory holding the toy data and backbone where the toy configs look for them (``data/...``).

    COCO and ADE20K: 4 training and 2 validation images; classification: 4 classes of 16 training and 6
    validation images (the generator's defaults).
    """
    root = tmp_path_factory.mktemp('toy_workspace')
    make_toy_coco(root / TOY_DATA['coco'], num_train=4, num_val=2)
    make_toy_ade20k(root / TOY_DATA['ade20k'], num_train=4, num_val=2)
    make_toy_classification(root / TOY_DATA['cls'])
    make_toy_backbone(root / TOY_BACKBONE)
    return root


@pytest.fixture(scope='session')
def toy_backbone(toy_workspace) -> Path:
    """The seeded random EfficientFormer-L1 checkpoint every toy task loads as its "pretrained" backbone."""
    return toy_workspace / TOY_BACKBONE


@pytest.fixture(scope='session')
def toy_config(toy_workspace):
    """``toy_config(base, path, **overrides)``: a user config on a shipped toy config, reading the shared toy data
    and backbone (``write_toy_user_config``'s arguments)."""
    def write(base, path, **overrides) -> Path:
        data = toy_workspace / TOY_DATA[TOY_CONFIGS[Path(base).name]]
        return write_toy_user_config(path, base, data, toy_workspace / TOY_BACKBONE, **overrides)

    return write


@dataclass
class ToyRun:
    config: Path
    work_dir: Path
    log: str

    def copy_to(self, dest: Path) -> Path:
        """A copy of the work dir whose ``last_checkpoint`` names the copy's checkpoint: resume there, leaving
        the shared run as it was."""
        shutil.copytree(self.work_dir, dest)
        latest = Path((dest / 'last_checkpoint').read_text().strip())
        (dest / 'last_checkpoint').write_text(str(dest / latest.name))
        return dest


#: task -> (toy config, user-config overrides, tools/train.py --cfg-options): the shortest runs that still
#: checkpoint, validate (cls, det) and log every iteration. The detector keeps every box at validation
#: (DET_TEST_OPTIONS): a validation without a box logs no metric, which mmdet's analyze_logs.py cannot read
TOY_RUNS = {
    'cls': (CLS_TOY, dict(), ['train_cfg.max_epochs=2']),
    'det': (DET_TOY, dict(batch_size=2, default_hooks=dict(logger=dict(interval=1))),
            ['train_cfg.max_epochs=1', *DET_TEST_OPTIONS]),
    'seg': (SEG_TOY, dict(batch_size=2, default_hooks=dict(logger=dict(interval=1))),
            ['train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2']),
}


def session_root(tmp_path_factory) -> Path:
    """The session's temporary directory that every pytest-xdist worker sees (each worker's own ``basetemp``
    lies in it), or the basetemp of a run without workers."""
    basetemp = tmp_path_factory.getbasetemp()
    return basetemp.parent if os.environ.get('PYTEST_XDIST_WORKER') else basetemp


@pytest.fixture(scope='session')
def toy_run(toy_config, tmp_path_factory):
    """``toy_run(task)`` (cls, det, seg): ``tools/train.py`` on the toy config, trained on first use and then
    shared by every test of the session, on every worker: the first worker to ask trains it under a file lock,
    the others wait and read it (a Cascade Mask R-CNN run is ~30 s). Its log is written last, so a run that
    failed is trained again, never half read. Tests must not write into its work dir (``ToyRun.copy_to``)."""
    root = session_root(tmp_path_factory) / 'toy_runs'
    root.mkdir(exist_ok=True)

    @functools.lru_cache(None)
    def train(task: str) -> ToyRun:
        config, log = root / f'{task}_user_config.py', root / f'{task}.log'
        with FileLock(root / f'{task}.lock'):
            if not log.exists():
                base, overrides, options = TOY_RUNS[task]
                toy_config(base, config, **overrides)
                out = run('tools/train.py', config, '--work-dir', root / task, '--cfg-options', *options)
                with atomic_write(log, 'w') as f:
                    f.write(out)
        return ToyRun(config, root / task, log.read_text())

    return train
