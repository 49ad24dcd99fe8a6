"""The detection and segmentation configs of every method: what each trains, and that the optimizer gets exactly
that (the fine-grained classification configs: test_fgvc_configs.py)."""
import re

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from torch import nn

from petah_mm.models import DenseEfficientFormer
from helpers import REPO, build_model


def backbone_expectation(method: str, backbone: nn.Module):
    """What each method trains, written from the module types rather than from the injector."""
    convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    attn = [n for n, m in backbone.named_modules() if re.search(r'token_mixer\.(qkv|proj)$', n)]
    lora = lambda layers: {f'backbone.{n}.adapter.lora_{f}' for n in layers for f in 'AB'}  # noqa: E731
    output_norms = {f'backbone.{n}' for n, _ in backbone.named_parameters() if re.match(r'norm\d\.', n)}
    return output_norms | {  # the task-owned output norms train under every method
        'frozen': set(),
        'full': {f'backbone.{n}' for n, _ in backbone.named_parameters()},
        'attn-ft': {f'backbone.{n}.{p}' for n in attn for p in ('weight', 'bias')},
        'lora-attn-r8': lora(attn),
        'petah1': lora(attn) | lora(convs),
        'petah2': lora(attn) | lora(convs),
    }[method]


@pytest.mark.parametrize('family', ['cascade_rcnn/cascade-mask-rcnn_ef-l1-{}_fpn_1x_coco.py',
                                    'sem_fpn/fpn_ef-l1-{}_8xb4-40k_ade20k-512x512.py'])
@pytest.mark.parametrize('method', ['frozen', 'full', 'attn-ft', 'lora-attn-r8', 'petah1', 'petah2'])
def test_trainable_parameters_of_each_method(family, method):
    cfg = Config.fromfile(REPO / 'configs' / family.format(method))
    model = build_model(cfg)
    plain = DenseEfficientFormer(arch='l1')
    expected = backbone_expectation(method, plain)
    expected |= {n for n, _ in model.named_parameters() if not n.startswith('backbone.')}  # neck and heads
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected
    optimized = {id(p) for group in build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
                 for p in group['params']}
    assert optimized == {id(p) for n, p in model.named_parameters() if n in expected}
