"""A training config whose loss weight or size is not finite is refused, naming the key, before training starts."""
import re

import pytest
from mmengine.config import Config

from petah_mm.engine import apply_common_args, tool_parser
from petah_mm.utils.json_data import DataError
from helpers import CLS_TOY, run_script


def user_config(tmp_path, body: str):
    path = tmp_path / 'user_config.py'
    path.write_text(f'_base_ = [{str(CLS_TOY)!r}]\n{body}\n')
    return str(path)


def apply(path, tmp_path, options=()):
    """What tools/train.py does with its arguments, in-process."""
    argv = [path, '--work-dir', str(tmp_path / 'work')] + (['--cfg-options', *options] if options else [])
    return apply_common_args(Config.fromfile(path), path, tool_parser('test').parse_args(argv))


@pytest.mark.parametrize('body, key', [
    ("model = dict(head=dict(loss=dict(loss_weight=float('inf'))))", 'model.head.loss.loss_weight=inf'),
    ("model = dict(head=dict(loss=dict(loss_weight=float('nan'))))", 'model.head.loss.loss_weight=nan'),
    ("train_dataloader = dict(dataset=dict(pipeline=[dict(type='RandomResizedCrop', scale=float('inf'))]))",
     'train_dataloader.dataset.pipeline[0].scale=inf'),
])
def test_non_finite_loss_weights_and_sizes_are_refused(tmp_path, body, key):
    path = user_config(tmp_path, body)
    with pytest.raises(DataError, match=re.escape(f'{path}: {key} is not a finite number')):
        apply(path, tmp_path)


def test_cfg_options_are_checked_and_other_bounds_may_be_infinite(tmp_path):
    path = user_config(tmp_path, "optim_wrapper = dict(clip_grad=dict(max_norm=float('inf')))")
    assert apply(path, tmp_path).optim_wrapper.clip_grad.max_norm == float('inf')  # a bound, not a loss or size
    with pytest.raises(DataError, match=r'model.head.loss.loss_weight=inf is not a finite number'):
        apply(path, tmp_path, ['model.head.loss.loss_weight=inf'])


def test_train_py_refuses_before_training(tmp_path):
    path = user_config(tmp_path, "model = dict(head=dict(loss=dict(loss_weight=1e999)))")
    proc = run_script('tools/train.py', path, '--work-dir', tmp_path / 'work', timeout=300)
    assert proc.returncode != 0
    assert f'{path}: model.head.loss.loss_weight=inf is not a finite number' in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / 'work').exists(), 'the Runner started (it creates the work dir)'
