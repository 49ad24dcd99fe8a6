"""TF "same" padding convolutions (timm's ``Conv2dSame``, mmcv's ``Conv2dAdaptivePadding``) are adapted like any
Conv2d: every forward form of every factorization equals the frozen class's own forward with the merged kernel
(LoRA's k×k A padded as the frozen conv is), the merge writes a kernel that a plain layer of the class loads, and
the real pretrained EfficientNet-Lite0 computes the same merged and unmerged on a real photo. A Conv2d subclass
whose forward petah_mm does not know stays refused by name. Adapter files written before these layers were
adapted (layout 1, the released packages) load with them at the identity, which is what their model computed."""
import copy
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from PIL import Image
from timm.layers import Conv2dSame
from torch import nn

from petah_mm.adapters import AdapterFileError, adapt_layer, adapted_layers, is_adapter_key
from petah_mm.adapters.discovery import discover_groups
from petah_mm.adapters.io import read_tensor_file, write_tensor_file
from petah_mm.adapters.layers import AdaptedSamePaddingConv2d
from petah_mm.datasets.real_silhouettes import PHOTOS
from petah_mm.testing import randomise_adapters
from helpers import REPO, assert_close_scaled, reduction_length

SAME_CLASSES = [Conv2dSame, Conv2dAdaptivePadding]
# Lite0's stride-2 3×3 and depthwise 5×5, and a dilated stride-1 conv: the pad depends on all of them
GEOMETRIES = [dict(kernel_size=3, stride=2), dict(kernel_size=5, stride=2, groups=8),
              dict(kernel_size=3, stride=1, dilation=2)]
SIZES = [(15, 16), (17, 17)]  # odd and even sides: the pads differ, and the odd pixel goes bottom/right
FACTORIZATIONS = ['lora', 'loha', 'lokr', 'dora']
#: the adapter of the first released Semantic FPN package (release/...-76b0d1b0, 2026-12-05), trained before
#: Conv2dSame was adapted: a layout 1 file
LAYOUT_1_ADAPTER = Path(__file__).parent / 'data' / 'fpn_tf-efficientnet-lite0-petah2_layout1.safetensors'


def frozen_conv(cls, geometry, channels=8):
    return cls(channels, channels, bias=True, **geometry).requires_grad_(False)


def with_kernel(plain: nn.Conv2d, kernel: torch.Tensor) -> nn.Conv2d:
    """A copy of the plain layer (its class's own forward) holding ``kernel``."""
    plain = copy.deepcopy(plain)
    plain.weight.data = kernel.detach().clone()
    return plain


def adapted(plain, factorization='lora', seed=0):
    layer = adapt_layer('conv', copy.deepcopy(plain), dict(type=factorization, rank=2))
    return randomise_adapters(layer, seed=seed, std=0.2)


def lora_delta_reference(layer):
    """s·reshape(B2D·A2D), written out here rather than taken from petah_mm."""
    a, b = layer.adapter.lora_A, layer.adapter.lora_B
    return layer.adapter.scaling * (b.reshape(b.shape[0], -1) @ a.reshape(a.shape[0], -1)).reshape(layer.weight.shape)


@pytest.mark.parametrize('factorization', FACTORIZATIONS)
@pytest.mark.parametrize('geometry', GEOMETRIES, ids=lambda g: '-'.join(f'{k[0]}{v}' for k, v in g.items()))
@pytest.mark.parametrize('cls', SAME_CLASSES, ids=lambda c: c.__name__)
def test_every_form_is_the_frozen_class_with_the_merged_kernel(cls, geometry, factorization):
    plain = frozen_conv(cls, geometry)
    layer = adapted(plain, factorization)
    assert isinstance(layer, AdaptedSamePaddingConv2d) and layer.padding == (0, 0)
    reference = with_kernel(plain, layer.adapter.merged_weight(layer.weight))
    ungrouped = layer.groups == 1  # the two-layer and low-rank forms exist for ungrouped convolutions only
    forms = layer.adapter.forms if ungrouped else ('fused', )
    for size in SIZES:
        x = torch.randn(2, 8, *size)
        expected = reference(x)
        for form in forms:
            layer.adapter.use_form(form)
            for training in (True, False):
                with torch.set_grad_enabled(training):
                    actual = layer.train(training)(x)
                assert_close_scaled(actual, expected, 8 * 25, msg=f'{form}, training={training}, input {size}')
        del layer.adapter.adapted_forward  # back to the default dispatch
        assert_close_scaled(layer.train()(x), expected, 8 * 25, msg=f'default dispatch, input {size}')


@pytest.mark.parametrize('cls', SAME_CLASSES, ids=lambda c: c.__name__)
def test_lora_branch_pads_a_like_the_frozen_conv(cls):
    """Eq. (2) built from two plain layers of the class: conv_same(x, W) + B(conv_same(x, A)). A has the frozen
    kernel's size, stride and dilation, so it needs the very same input pad."""
    plain = frozen_conv(cls, dict(kernel_size=3, stride=2))
    layer = adapted(plain)
    low = cls(8, 2, 3, stride=2, bias=False)
    low.weight.data = layer.adapter.lora_A.detach().clone()
    up = layer.adapter.lora_B.detach() * layer.adapter.scaling
    x = torch.randn(2, 8, 17, 16)
    expected = plain(x) + F.conv2d(low(x), up)
    for form in ('branch', 'thin', 'kernel'):
        layer.adapter.use_form(form)
        with torch.set_grad_enabled(form != 'thin'):
            assert_close_scaled(layer.train(form != 'thin')(x), expected, 8 * 9 + 2, msg=form)


@pytest.mark.parametrize('cls', SAME_CLASSES, ids=lambda c: c.__name__)
def test_lora_training_kernel_gradients_are_autograds_through_the_frozen_class(cls):
    plain = frozen_conv(cls, dict(kernel_size=3, stride=2))
    layer = adapted(plain).train()
    x = torch.randn(2, 8, 17, 16, requires_grad=True)
    grad = torch.randn(2, 8, 9, 8)
    layer.adapter.use_form('kernel')
    out = layer(x)
    assert type(out.grad_fn).__name__.startswith('LowRankConv2d')  # the low-rank kernel ran, not autograd's conv
    actual = torch.autograd.grad(out, (x, layer.adapter.lora_A, layer.adapter.lora_B), grad)
    kernel = layer.weight + lora_delta_reference(layer)
    reference = torch.func.functional_call(plain, dict(weight=kernel, bias=plain.bias), (x, ))
    expected = torch.autograd.grad(reference, (x, layer.adapter.lora_A, layer.adapter.lora_B), grad)
    for name, a, e in zip(('x', 'lora_A', 'lora_B'), actual, expected):
        assert_close_scaled(a, e, 2 * 9 * 8 * 8, msg=f'gradient of {name}')


@pytest.mark.parametrize('factorization', FACTORIZATIONS)
@pytest.mark.parametrize('cls', SAME_CLASSES, ids=lambda c: c.__name__)
def test_merged_state_dict_loads_into_the_plain_class(cls, factorization):
    plain = nn.Sequential(frozen_conv(cls, dict(kernel_size=3, stride=2)))
    model = copy.deepcopy(plain)
    model[0] = adapted(plain[0], factorization)
    model.eval()
    x = torch.randn(1, 8, 15, 16)
    frozen_weight, unmerged = model[0].weight.clone(), model(x)
    model[0].merge()
    merged = model(x)
    state = {k: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
    plain.load_state_dict(state, strict=True)
    assert type(plain[0]) is cls
    assert_close_scaled(merged, unmerged, 8 * 9, msg='merged vs unmerged')
    assert torch.equal(plain(x), merged)
    model[0].unmerge()
    assert torch.equal(model[0].weight, frozen_weight)


class ScaledConv(nn.Conv2d):
    """A Conv2d subclass with a forward of its own, which petah_mm cannot know."""

    def forward(self, x):
        return 2 * super().forward(x)


def test_a_conv2d_subclass_of_unknown_forward_stays_refused_by_name():
    with pytest.raises(TypeError, match=r"module 'stem' of type ScaledConv: .*narrow the target patterns"):
        adapt_layer('stem', ScaledConv(3, 8, 3), dict(type='lora', rank=2))
    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), ScaledConv(8, 8, 3), Conv2dAdaptivePadding(8, 8, 3, 2),
                          nn.Conv2d(8, 8, 3))
    groups, skipped = discover_groups(model)
    assert groups == {'conv': ['0', '2', '3']}
    assert skipped == {'ScaledConv (a subclass whose forward petah_mm does not know)': 1}


# ------------------------------------------------------------------------------ the real EfficientNet-Lite0


def lite0_backbone(key='dense_backbone', init=True):
    """The PETAH-2 EfficientNet-Lite0 of configs/real (feature maps, or the classifier's trunk), pretrained."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'real' / '_base_' / 'tf-efficientnet-lite0.py')).real[key]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    if init:
        model.init_weights()
    return model.eval()


def chelsea(size=224) -> torch.Tensor:
    """skimage's ``chelsea`` photo (the installed file, sha256-checked), normalised as the TF Lite release."""
    image = Image.open(PHOTOS['chelsea.png'].locate()).convert('RGB').resize((size, size), Image.Resampling.BICUBIC)
    return (torch.from_numpy(np.asarray(image, np.float32)).permute(2, 0, 1)[None] - 127.5) / 127.5


@pytest.fixture(scope='module')
def lite0():
    return lite0_backbone()


def same_padding_layers(model):
    return [name for name, m in model.named_modules() if isinstance(m, (Conv2dSame, AdaptedSamePaddingConv2d))]


def test_lite0_adapts_its_five_stride_2_same_padding_convs(lite0):
    plain = timm.create_model('tf_efficientnet_lite0', features_only=True, out_indices=(1, 2, 3, 4))
    expected = ['timm_model.' + name for name in same_padding_layers(plain)]
    assert len(expected) == 5
    assert [n for n, m in adapted_layers(lite0).items() if isinstance(m, AdaptedSamePaddingConv2d)] == expected
    assert 'Conv2dSame' not in lite0.target_summary  # none is left as it is


@pytest.mark.parametrize('key', ['dense_backbone', 'backbone'])
def test_lite0_conv_lora_counts_every_convolution(key):
    """PETAH-2's count is r·(in/groups·k²) + out·r summed over every Conv2d of timm's own model, stride-2
    Conv2dSame included (EfficientNet-Lite has no depthwise 1×1, which discovery would skip)."""
    model = lite0_backbone(key, init=False)
    dense = dict(features_only=True, out_indices=(1, 2, 3, 4)) if key == 'dense_backbone' else {}
    plain = timm.create_model('tf_efficientnet_lite0', **dense)
    convs = [m for m in plain.modules() if isinstance(m, nn.Conv2d)]
    expected = sum(2 * m.weight[0].numel() + m.out_channels * 2 for m in convs)
    assert model.trainable_by_group() == dict(conv=expected, other=0)
    assert expected == {'dense_backbone': 60982, 'backbone': 64182}[key]  # count_params.py on configs/real


def test_lite0_merged_equals_unmerged_on_a_real_photo_and_loads_into_timms_plain_model(lite0):
    x = chelsea()
    model = randomise_adapters(copy.deepcopy(lite0), seed=3, std=0.05)
    with torch.no_grad():
        frozen, unmerged = lite0(x), model(x)
        model.merge_adapters()
        merged = model(x)
        state = {k: v.clone() for k, v in model.state_dict().items() if not is_adapter_key(k)}
        model.unmerge_adapters()
        plain = MODELS.build(model.plain_backbone_config())
        plain.eval()  # TIMMBackbone.train returns None
        plain.load_state_dict(state, strict=True)
        reloaded = plain(x)
    same = [m for m in plain.modules() if isinstance(m, Conv2dSame)]
    assert len(same) == 5 and all(type(m) is Conv2dSame for m in same)
    length = reduction_length(lite0)
    for level, (f, u, m, r) in enumerate(zip(frozen, unmerged, merged, reloaded)):
        # the adapters change the features: merged = unmerged is not frozen = frozen
        assert (u - f).abs().max() > 0.05 * f.abs().max(), f'level {level}: the random adapters change nothing'
        assert_close_scaled(m, u, length, msg=f'level {level}: merged vs unmerged')
        assert torch.equal(r, m), f'level {level}: the plain model with the merged weights'


def test_layout_1_files_load_with_the_same_padding_layers_at_the_identity(lite0):
    """The released adapter (written before Conv2dSame was adapted) loads: its tensors where it has them, the
    identity on the five layers its model left frozen; so the model computes what the released one did."""
    model = randomise_adapters(copy.deepcopy(lite0), seed=1)  # another task's adapters, to be replaced
    path = LAYOUT_1_ADAPTER
    tensors, meta = read_tensor_file(path, kind='adapter')
    assert 'layout' not in meta
    model.load_adapter(path)
    own = model.task_state_dict()
    assert all(torch.equal(own[name], tensor) for name, tensor in tensors.items())
    same = {n: m for n, m in adapted_layers(model).items() if isinstance(m, AdaptedSamePaddingConv2d)}
    assert len(same) == 5 and not any(f'{n}.adapter.lora_A' in tensors for n in same)
    assert all(not m.adapter.delta_weight(m.weight).any() for m in same.values())
    again = randomise_adapters(copy.deepcopy(lite0), seed=2)
    again.load_adapter(path)
    assert all(torch.equal(a, b) for a, b in zip(again.task_state_dict().values(), own.values()))  # one state


def test_layout_1_files_lacking_other_tensors_and_unknown_layouts_are_refused(lite0, tmp_path):
    tensors, meta = read_tensor_file(LAYOUT_1_ADAPTER, kind='adapter')
    other = sorted(tensors)[0]
    write_tensor_file(tmp_path / 'lacking.safetensors', {k: v for k, v in tensors.items() if k != other}, meta,
                      kind='adapter')
    with pytest.raises(AdapterFileError, match=f'missing .*{other}'):
        copy.deepcopy(lite0).load_adapter(tmp_path / 'lacking.safetensors')
    write_tensor_file(tmp_path / 'future.safetensors', tensors, dict(meta, layout=3), kind='adapter')
    with pytest.raises(AdapterFileError, match='adapter layout 3 .*newer petah_mm'):
        copy.deepcopy(lite0).load_adapter(tmp_path / 'future.safetensors')


def test_layout_2_files_hold_the_same_padding_adapters(lite0, tmp_path):
    source = randomise_adapters(copy.deepcopy(lite0), seed=4)
    source.save_adapter(tmp_path / 'a.safetensors')
    tensors, meta = read_tensor_file(tmp_path / 'a.safetensors', kind='adapter')
    assert meta['layout'] == 2 and 'timm_model.conv_stem.adapter.lora_A' in tensors
    target = copy.deepcopy(lite0)
    target.load_adapter(tmp_path / 'a.safetensors')
    assert all(torch.equal(a, b) for a, b in zip(target.task_state_dict().values(),
                                                 source.task_state_dict().values()))
