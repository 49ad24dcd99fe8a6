"""EfficientFormer for dense prediction: checkpoint layouts, any input size, the PETAH wrapper."""
import re

import pytest
import timm
import torch
from mmengine.registry import DefaultScope, init_default_scope
from mmpretrain.models import EfficientFormer

from petah_mm.models import DenseEfficientFormer, PETAHEfficientFormer
from petah_mm.models.backbones.efficientformer import relative_offset_index
from helpers import assert_close_scaled, reduction_length


def randomise(model, seed=0):
    """Random values everywhere, BatchNorm statistics and layer scales included."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if 'running_var' in name
                        else torch.randn(t.shape, generator=g) * 0.2)
    model.eval()
    return model


def pretrained(tmp_path, state_dict, name='ckpt.pth'):
    torch.save(dict(state_dict=state_dict), tmp_path / name)
    return dict(type='Pretrained', checkpoint=str(tmp_path / name))


def load_into(tmp_path, state_dict, **kwargs):
    model = DenseEfficientFormer(init_cfg=pretrained(tmp_path, state_dict), **kwargs)
    model.init_weights()
    model.eval()
    return model


def assert_same_features(outputs, references, model):
    """Feature maps equal up to the rounding of another implementation's summation order."""
    for output, reference in zip(outputs, references, strict=True):
        assert_close_scaled(output, reference, reduction_length(model))


@pytest.mark.parametrize('arch', ['l1', 'l3'])
def test_mmpretrain_layout_gives_identical_features(tmp_path, arch):
    source = randomise(EfficientFormer(arch=arch, out_indices=[0, 1, 2, 3], reshape_last_feat=True))
    ours = load_into(tmp_path, source.state_dict(), arch=arch)
    assert set(ours.state_dict()) == set(source.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert_same_features(ours(x), source(x), source)


def timm_l1():
    return randomise(timm.create_model('efficientformer_l1', pretrained=False))


def stage_outputs(model, x):
    """Pre-norm outputs of the four stages, NCHW, as timm's forward_intermediates returns them."""
    outs = []
    hooks = [stage.register_forward_hook(lambda m, i, o: outs.append(o)) for stage in model.network]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    B, N, C = outs[-1].shape
    outs[-1] = outs[-1].transpose(1, 2).reshape(B, C, x.shape[2] // 32, x.shape[3] // 32)
    return outs


def test_timm_layout_gives_identical_features(tmp_path):
    source = timm_l1()
    x = torch.randn(2, 3, 224, 224)
    trunk = load_into(tmp_path, source.state_dict(), arch='l1', out_indices=[3], reshape_last_feat=False)
    with torch.no_grad():
        assert_same_features([trunk(x)[0]], [source.forward_features(x).transpose(1, 2)], source)
        reference = source.forward_intermediates(x, indices=4, intermediates_only=True)
    dense = load_into(tmp_path, source.state_dict(), arch='l1')
    assert_same_features(stage_outputs(dense, x), reference, source)


def to_original_layout(timm_state):
    """timm → snap-research keys, written independently of petah_mm's converter."""
    out = {}
    for k, v in timm_state.items():
        k = k.replace('stem.conv1', 'patch_embed.0').replace('stem.norm1', 'patch_embed.1')
        k = k.replace('stem.conv2', 'patch_embed.3').replace('stem.norm2', 'patch_embed.4')
        k = re.sub(r'stages\.(\d)\.downsample\.conv', lambda m: f'network.{2 * int(m[1]) - 1}.proj', k)
        k = re.sub(r'stages\.(\d)\.downsample\.norm', lambda m: f'network.{2 * int(m[1]) - 1}.norm', k)
        k = re.sub(r'stages\.(\d)\.blocks\.', lambda m: f'network.{2 * int(m[1])}.', k)
        k = re.sub(r'ls([12])\.gamma', r'layer_scale_\1', k).replace('head_dist', 'dist_head')
        out[k] = v
    return out


def test_original_layout_gives_identical_features(tmp_path):
    source = timm_l1()
    original = to_original_layout(source.state_dict())
    assert 'network.1.proj.weight' in original and 'patch_embed.3.weight' in original
    trunk = load_into(tmp_path, original, arch='l1', out_indices=[3], reshape_last_feat=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_same_features([trunk(x)[0]], [source.forward_features(x).transpose(1, 2)], source)


def test_classification_checkpoint_into_dense_backbone_only_refreshes_output_norms(tmp_path):
    source = randomise(EfficientFormer(arch='l1', out_indices=[3]))
    dense = load_into(tmp_path, {f'backbone.{k}': v for k, v in source.state_dict().items()}, arch='l1')
    for name, value in source.state_dict().items():
        if not name.startswith('norm'):
            assert torch.equal(dense.state_dict()[name], value), name
    assert torch.equal(dense.norm3.weight, torch.ones(448))


def test_wrong_arch_checkpoint_is_a_clear_error(tmp_path):
    source = EfficientFormer(arch='l1', out_indices=[0, 1, 2, 3], reshape_last_feat=True)
    model = DenseEfficientFormer(arch='l3', init_cfg=pretrained(tmp_path, source.state_dict()))
    with pytest.raises(KeyError, match=r"does not fit EfficientFormer arch 'l3'.*shape mismatches"):
        model.init_weights()


@pytest.mark.parametrize('size', [(256, 320), (480, 640), (224, 288)])
def test_any_size_divisible_by_32(size):
    model = DenseEfficientFormer(arch='l1').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, size[0] // s, size[1] // s) for c, s in zip(model.out_channels, model.out_strides)]


def test_interpolation_path_is_exact_at_the_pretrained_grid():
    model = DenseEfficientFormer(arch='l1')
    attn = model.network[3][-1].token_mixer
    with torch.no_grad():
        attn.attention_biases.normal_()
        table = attn.attention_biases.reshape(1, 8, 7, 7)
        resized = torch.nn.functional.interpolate(table, size=(7, 7), mode='bicubic', align_corners=False)
        assert torch.equal(resized, table)
        attn.token_grid = (7, 7)
        fixed = attn.attention_bias()
        assert torch.equal(fixed, attn.attention_biases[:, relative_offset_index(7, 7)])
        attn.token_grid = (8, 10)
        assert attn.attention_bias().shape == (8, 80, 80)


def test_gradient_checkpointing_gives_the_same_gradients():
    x = torch.randn(2, 3, 64, 96)
    grads = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = DenseEfficientFormer(arch='l1', with_cp=with_cp).train()
        sum(o.square().mean() for o in model(x)).backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_norm_eval_and_frozen_stages():
    model = DenseEfficientFormer(arch='l1', frozen_stages=2, norm_eval=True).train()
    assert not model.patch_embed[0].bn.training and not model.network[2][0].bn.training
    assert not any(p.requires_grad for p in model.network[1].parameters())
    assert all(p.requires_grad for p in model.network[2].parameters())


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain'])
def test_petah_backbone_builds_in_every_scope(scope):
    from mmengine.registry import MODELS
    with DefaultScope.overwrite_default_scope(scope):
        init_default_scope(scope)
        model = MODELS.build(dict(type='PETAHEfficientFormer', arch='l1', out_indices=[0, 1, 2, 3],
                                  adapter=dict(method='petah', conv_rank=2)))
    assert isinstance(model, PETAHEfficientFormer)
    assert model.out_channels == [48, 96, 224, 448]


def test_pretrained_weights_load_before_adapters_with_no_missing_keys(tmp_path):
    source = randomise(EfficientFormer(arch='l1', out_indices=[0, 1, 2, 3], reshape_last_feat=True))
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = source(x)
    model = PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', conv_rank=2),
                                 init_cfg=pretrained(tmp_path, source.state_dict()))
    model.init_weights()
    model.eval()
    with torch.no_grad():
        assert_same_features(model(x), expected, source)


def test_method_switch_is_one_config_value():
    from mmengine.config import Config
    cfg = Config(dict(model=dict(backbone=dict(type='PETAHEfficientFormer', arch='l1',
                                               adapter=dict(method='petah', conv_rank=2)))))
    cfg.merge_from_dict({'model.backbone.adapter.method': 'lora_attn'})
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model.backbone)
    assert model.adapter_plan.method == 'lora_attn'
    assert model.task_param_names and all('.token_mixer.' in n for n in model.task_param_names)
