"""Methods by name: what each one trains, on a toy backbone and on EfficientFormer."""
import copy

import pytest
import torch
from mmengine.model import BaseModule
from mmengine.optim import OptimWrapper

from petah_mm.adapters import METHODS, adapted_layers, build_plan
from helpers import assert_close_scaled, reduction_length
from helpers.toy_backbone import ToyHybrid


def trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_each_method_trains_what_it_says_on_a_declared_backbone():
    expect = {
        'frozen': set(),
        'full': {n for n, _ in ToyHybrid(dict(method='frozen')).named_parameters()},
        'attn_ft': {f'blocks.{b}.{m}.{p}' for b in (0, 1) for m in ('qkv', 'proj') for p in ('weight', 'bias')},
        'lora_attn': {f'blocks.{b}.{m}.adapter.lora_{f}' for b in (0, 1) for m in ('qkv', 'proj') for f in 'AB'},
        'lora_attn_mlp': {f'blocks.{b}.{m}.adapter.lora_{f}' for b in (0, 1)
                          for m in ('qkv', 'proj', 'fc1', 'fc2') for f in 'AB'},
        'petah': {f'blocks.{b}.{m}.adapter.lora_{f}' for b in (0, 1) for m in ('qkv', 'proj') for f in 'AB'}
        | {f'stem.{i}.adapter.lora_{f}' for i in (0, 3) for f in 'AB'},
    }
    assert set(expect) == set(METHODS)
    for method, names in expect.items():
        assert trainable(ToyHybrid(dict(method=method, conv_rank=1))) == names, method


def test_ranks_reach_the_layers():
    model = ToyHybrid(dict(method='petah', rank=16, conv_rank=2, alpha=4))
    layers = adapted_layers(model)
    assert layers['blocks.0.qkv'].adapter.lora_A.shape == (16, 16)
    assert layers['stem.3'].adapter.lora_A.shape == (2, 8, 3, 3)
    assert layers['stem.3'].adapter.scaling == 2.0 and layers['blocks.0.qkv'].adapter.scaling == 0.25


@pytest.mark.parametrize('kwargs, error', [
    (dict(method='lora'), "unknown adapter method 'lora'"),
    (dict(method='petah'), 'needs adapter.conv_rank'),
    (dict(method='petah', conv_rank=0), 'conv_rank must be a positive integer'),
    (dict(method='lora_attn', rank=-8), 'rank must be a positive integer'),
    (dict(method='lora_attn', factorization='svd'), "unknown adapter factorization 'svd'"),
])
def test_bad_method_configs_are_named(kwargs, error):
    with pytest.raises(ValueError, match=error):
        build_plan(**kwargs)


def test_targets_matching_nothing_name_method_and_patterns(monkeypatch):
    monkeypatch.setattr(ToyHybrid, 'adapter_targets', dict(attn=[r'blocks\.\d+\.attention\.qkv'], conv=[r'stem\.0']))
    with pytest.raises(ValueError, match=r"method 'lora_attn'.*'attn'.*attention"):
        ToyHybrid(dict(method='lora_attn'))
    monkeypatch.setattr(ToyHybrid, 'adapter_targets', dict(attn=[r'blocks\.\d+\.qkv']))
    with pytest.raises(KeyError, match="needs the target group 'mlp'.*declares only \\['attn'\\]"):
        ToyHybrid(dict(method='lora_attn_mlp'))


def test_switching_method_keeps_unused_ranks_harmless():
    """--cfg-options model.backbone.adapter.method=lora_attn on a PETAH-2 config."""
    model = ToyHybrid(dict(method='lora_attn', conv_rank=2))
    assert not any(name.startswith('stem') for name in adapted_layers(model))


class Parent(BaseModule):
    """A whole model whose init_cfg re-initialises every Conv2d and Linear below it."""

    def __init__(self, backbone):
        super().__init__(init_cfg=[
            dict(type='Kaiming', layer=['Conv2d', 'Linear']),
            dict(type='Constant', layer='LoRA', val=1.0)])  # even a config naming the adapter class
        self.backbone = backbone


@pytest.mark.parametrize('builder', ['toy', 'efficientformer'])
def test_identity_at_init_survives_a_whole_model_init_weights(builder, build_ef):
    backbone = ToyHybrid(dict(method='petah', conv_rank=2)) if builder == 'toy' else build_ef('petah')
    model = Parent(backbone)
    model.init_weights()
    frozen = copy.deepcopy(backbone)
    for layer in adapted_layers(frozen).values():  # the frozen backbone: same kernels, no adapters
        layer.merged = True
    backbone.eval(), frozen.eval()
    x = torch.randn(2, 3, 64, 64)
    out, ref = backbone(x), frozen(x)
    for a, b in zip(out if isinstance(out, tuple) else [out], ref if isinstance(ref, tuple) else [ref]):
        assert torch.equal(a, b)
    assert all(torch.count_nonzero(layer.adapter.lora_B) == 0 for layer in adapted_layers(backbone).values())


@pytest.mark.parametrize('method', ['petah', 'lora_attn', 'attn_ft', 'frozen', 'full'])
def test_one_step_changes_exactly_the_task_parameters(method, build_ef):
    model = build_ef(method)
    model.init_weights()
    model.train()
    optim = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim.update_params(sum(f.square().mean() for f in model(torch.randn(2, 3, 64, 64))))
    after = model.state_dict()
    # the method's parameters, and the task-owned output norms, which train under every method
    trains = set(model.task_param_names) | set(model.output_norm_param_names())
    for name in before:
        changed = not torch.equal(before[name], after[name])
        if name in trains:
            assert changed, f'{method}: task parameter {name} did not change'
        elif name not in trains:  # BatchNorm statistics included: norm_eval under every method
            assert not changed, f'{method}: frozen tensor {name} changed'
    assert all(p.requires_grad == (n in trains) for n, p in model.named_parameters())


def test_adapter_survives_train_and_frozen_stages_freezes_whole_stages(build_ef):
    model = build_ef('petah', frozen_stages=1)
    model.train()
    stem_adapter = model.patch_embed[0].conv.adapter.lora_A
    later_adapter = model.network[2][1].mlp.fc1.adapter.lora_A
    assert not stem_adapter.requires_grad and later_adapter.requires_grad
    assert not model.network[0][0].mlp.norm1.training and not model.network[2][1].mlp.norm1.training


def test_loha_is_one_config_value_away():
    model = ToyHybrid(dict(method='petah', conv_rank=2, factorization='loha'))
    layers = adapted_layers(model)
    assert {type(layer.adapter).__name__ for layer in layers.values()} == {'LoHa'}
    x = torch.randn(1, 3, 32, 32)
    model.eval()
    before = model(x)
    for layer in layers.values():  # non-zero deltas, then merged == unmerged
        with torch.no_grad():
            layer.adapter.hada_w2_b.normal_()
    unmerged = model(x)
    assert not torch.equal(unmerged, before)
    model.merge_adapters()
    assert_close_scaled(model(x), unmerged, reduction_length(model))


def test_trainable_by_group_is_the_papers_params_column(build_ef):
    """EF-L1 PETAH-2, counted by hand: one Meta3D block (dim 448) and 33 convolutions."""
    counts = build_ef('petah').trainable_by_group()
    attn = 8 * (448 + 1536) + 8 * (1024 + 448)  # qkv 448->1536, proj 1024->448, rank 8
    meta4d = sum(2 * 2 * (d + 4 * d) * n for d, n in ((48, 3), (96, 2), (224, 6), (448, 3)))  # fc1, fc2
    stem_and_downsamples = 2 * sum(cin * 9 + cout for cin, cout in
                                   ((3, 24), (24, 48), (48, 96), (96, 224), (224, 448)))
    assert counts == dict(attn=attn, conv=meta4d + stem_and_downsamples, other=0)
