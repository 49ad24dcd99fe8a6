"""Merged exports never destroy an input or leave half an export (issue 23, items 4 and 5):
``export_merged.py CFG CKPT out.py`` used to write the checkpoint to ``out.py`` and then its config over
it, exiting 0; and the config was written with ``Config.dump``, not atomically."""
import errno
import sys

import pytest
import torch

import petah_mm.deploy.merged as merged_module
from petah_mm.deploy import export_merged
from petah_mm.deploy.merged import merged_output_paths
from helpers import REPO, run_process
from helpers.task_models import trained_model


@pytest.fixture(scope='module')
def cls_model(toy_backbone):
    return trained_model('cls', toy_backbone)


def test_the_tool_refuses_an_output_whose_config_would_replace_it(cls_model, tmp_path):
    cfg, model = cls_model
    cfg.dump(tmp_path / 'train.py')
    torch.save(dict(state_dict=model.state_dict()), tmp_path / 'epoch_1.pth')
    before = (tmp_path / 'epoch_1.pth').read_bytes()
    proc = run_process([sys.executable, REPO / 'tools' / 'deployment' / 'export_merged.py', tmp_path / 'train.py',
                        tmp_path / 'epoch_1.pth', tmp_path / 'out.py'])
    assert proc.returncode == 2, proc.stdout[-1000:] + proc.stderr[-2000:]
    assert 'would be the same file' in proc.stderr, proc.stderr[-2000:]
    inputs = [tmp_path / 'train.py', tmp_path / 'epoch_1.pth']  # the training config's name; the checkpoint
    for out in ('train.pth', 'epoch_1.pth'):
        with pytest.raises(ValueError, match='refusing to overwrite the input file'):
            merged_output_paths(tmp_path / out, force=True, inputs=inputs)
    assert (tmp_path / 'epoch_1.pth').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth', 'train.py']


def test_a_failed_config_write_leaves_no_half_export(cls_model, tmp_path, monkeypatch):
    cfg, model = cls_model
    with pytest.raises(ValueError, match='would be the same file'):
        export_merged(model, cfg, tmp_path / 'out.py')
    real_write = merged_module.write_bytes_atomic

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(merged_module, 'write_bytes_atomic', disk_full)
    with pytest.raises(OSError, match='No space left'):
        export_merged(model, cfg, tmp_path / 'merged.pth')
    assert not list(tmp_path.iterdir()), 'the checkpoint without its config was left behind'
    monkeypatch.setattr(merged_module, 'write_bytes_atomic', real_write)
    out = export_merged(model, cfg, tmp_path / 'merged.pth')  # the rerun needs no --force
    assert 'load_from' in out.with_suffix('.py').read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['merged.pth', 'merged.py']
