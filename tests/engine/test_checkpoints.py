"""Crash-safe training checkpoints: atomic writes, old files removed last, resume after SIGKILL, same RNG stream."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from petah_mm.utils import atomic_write
from petah_mm.utils.fileio import default_mode, host_tag, stale_temp_files
from helpers import REPO, run_process

PROBE = REPO / 'tests' / 'helpers' / 'crash_probe.py'
pytestmark = pytest.mark.skipif(not Path('/proc/self/fd').is_dir(), reason='the crash probe reads /proc/self/fd')


def train(work_dir, max_epochs, *flags):
    return run_process([sys.executable, PROBE, work_dir, max_epochs, *flags], timeout=300)


def final_state(work_dir):
    checkpoint = torch.load(work_dir / 'epoch_3.pth', map_location='cpu', weights_only=True)
    return checkpoint['meta'], checkpoint['state_dict'], checkpoint['message_hub']['runtime_info']


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    work = tmp_path_factory.mktemp('uninterrupted')
    proc = train(work, 3)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return final_state(work)


@pytest.mark.slow  # five training runs in fresh processes
@pytest.mark.parametrize('kill', ['write', 'cleanup'])
def test_sigkill_during_a_checkpoint_save_loses_nothing(tmp_path, uninterrupted, kill):
    crashed = train(tmp_path, 3, '--kill', kill)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    latest = Path((tmp_path / 'last_checkpoint').read_text())
    assert latest.is_file(), 'last_checkpoint names a missing file'
    assert latest.name == ('epoch_1.pth' if kill == 'write' else 'epoch_2.pth')
    assert (tmp_path / 'epoch_1.pth').is_file()  # max_keep_ckpts=1, yet the old one survives until the new is complete
    if kill == 'write':
        assert stale_temp_files(tmp_path / 'epoch_2.pth') and not (tmp_path / 'epoch_2.pth').exists()

    resumed = train(tmp_path, 3, '--resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'resumed epoch: {1 if kill == "write" else 2}' in resumed.stdout + resumed.stderr
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['epoch_3.pth']
    assert not list(tmp_path.glob('.*.tmp'))
    meta, state, runtime = final_state(tmp_path)
    ref_meta, ref_state, ref_runtime = uninterrupted
    assert (meta['epoch'], meta['iter']) == (ref_meta['epoch'], ref_meta['iter']) == (3, 9)
    assert runtime['keep_ckpt_ids'] == ref_runtime['keep_ckpt_ids'] == [2, 3]  # 2: removed after the save
    for name in ('fc.adapter.lora_A', 'fc.adapter.lora_B'):  # the RNG streams were restored: bit-exact
        assert torch.equal(state[name], ref_state[name]), name


def test_atomic_write_cleans_stale_temp_files_and_uses_normal_permissions(tmp_path):
    target = tmp_path / 'adapter.safetensors'
    killed = subprocess.Popen([sys.executable, '-c', 'pass'])
    killed.wait()  # a writer of this host that no longer runs
    stale = tmp_path / f'.adapter.safetensors.{host_tag()}.{killed.pid}.abc123.tmp'
    stale.write_bytes(b'left by a killed write')
    other = tmp_path / f'.other.safetensors.{host_tag()}.{killed.pid}.abc123.tmp'
    other.write_bytes(b'another target')
    old_umask = os.umask(0o022)
    try:
        with atomic_write(target) as f:
            f.write(b'data')
        assert target.stat().st_mode & 0o777 == 0o644 == default_mode()
    finally:
        os.umask(old_umask)
    assert not stale.exists() and other.exists()
    assert target.read_bytes() == b'data'


@pytest.mark.parametrize('config', [
    'configs/toy/ef-l1-petah2_toy-cls.py', 'configs/toy/fpn_ef-l1-petah2_toy-ade20k.py',
    'configs/toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py', 'configs/fgvc/ef-l1-petah2_8xb128-200e_dtd.py',
    'configs/cascade_rcnn/cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py',
    'configs/sem_fpn/fpn_ef-l7-petah2_8xb4-40k_ade20k-512x512.py'
])
def test_configs_train_with_the_safe_checkpoint_hook(config):
    from mmengine.config import Config
    assert Config.fromfile(REPO / config).default_hooks.checkpoint.type == 'SafeCheckpointHook'
