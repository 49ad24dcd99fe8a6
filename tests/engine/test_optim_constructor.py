"""PETAHOptimWrapperConstructor: only what trains reaches the optimizer, and one summary line says what that is.

The quiet log of a real toy training run is checked in tests/tools/test_train.py.
"""
import logging

import pytest
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from torch import nn

from petah_mm.adapters import is_adapter_key
from helpers import REPO
from helpers.toy_backbone import ToyHybrid

BASES = [  # every config reaches its optimizer through one of these
    'configs/cascade_rcnn/cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py',
    'configs/sem_fpn/fpn_ef-l7-petah2_8xb4-40k_ade20k-512x512.py',
    'configs/_base_/schedules/fgvc_bs1024_adamw_200e.py',
]


class Detector(nn.Module):
    """backbone / neck / head, as the summary groups them."""

    def __init__(self, method):
        super().__init__()
        self.backbone = ToyHybrid(dict(method=method, conv_rank=1))
        self.neck = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16))
        self.head = nn.Linear(16, 3)


def build(model, **paramwise_cfg):
    return build_optim_wrapper(model, dict(constructor='PETAHOptimWrapperConstructor',
                                           optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.1),
                                           paramwise_cfg=paramwise_cfg))


def names_and_options(model, wrapper):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: (g['lr'], g['weight_decay']) for g in wrapper.optimizer.param_groups for p in g['params']}


@pytest.mark.parametrize('paramwise_cfg', [{}, dict(norm_decay_mult=0.0)])
def test_only_trainable_parameters_reach_the_optimizer(paramwise_cfg):
    model = Detector('petah')
    options = names_and_options(model, build(model, **paramwise_cfg))
    assert set(options) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(is_adapter_key(n) for n in options) and not any(n.startswith('backbone.stem.0.weight') for n in options)
    norm_decay = 0.0 if paramwise_cfg else 0.1
    assert options['neck.1.weight'] == (0.01, pytest.approx(norm_decay)) and options['head.weight'] == (0.01, 0.1)


def test_adapter_lr_factor_reaches_the_adapters_only():
    model = Detector('lora_attn')
    options = names_and_options(model, build(model, custom_keys={'backbone': dict(lr_mult=5.0)}))
    adapters = {n for n in options if n.startswith('backbone.')}
    assert adapters and all('.adapter.lora_' in n for n in adapters)
    assert all(options[n][0] == pytest.approx(0.05) for n in adapters)
    assert options['head.weight'][0] == 0.01


def test_one_summary_line_replaces_the_per_tensor_lines():
    model = Detector('petah')
    trained = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    adapters = sum(size for n, size in trained.items() if is_adapter_key(n))
    heads = sum(size for n, size in trained.items() if not n.startswith('backbone.'))
    own = sum(trained.values()) - adapters - heads
    records, handler, logger = [], logging.Handler(), MMLogger.get_current_instance()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        build(model, norm_decay_mult=0.0, custom_keys={'backbone': dict(lr_mult=2.0)})
    finally:
        logger.removeHandler(handler)
    lines = [record.getMessage() for record in records if record.levelno >= logging.INFO]
    assert len(lines) == 1, lines
    own_text = f'{own:,} (lr x2)' if own else '0'
    assert (f'{sum(trained.values()):,} trainable parameters: backbone adapters {adapters:,} (lr x2), '
            f'backbone own weights {own_text}, neck and heads {heads:,} (lr x1); {frozen:,} frozen, left out'
            ) in lines[0]


def test_nothing_to_train_is_an_error_that_names_the_model():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match='Linear has no trainable parameter'):
        build(model)


@pytest.mark.parametrize('path', BASES)
def test_every_optimizer_base_uses_the_constructor(path):
    assert Config.fromfile(REPO / path).optim_wrapper.constructor == 'PETAHOptimWrapperConstructor'
