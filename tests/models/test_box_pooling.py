"""The pooling token mixer as a depthwise box filter: mmpretrain's and timm's result, fewer saved tensors."""
from unittest import mock

import pytest
import torch
from mmengine.registry import DefaultScope
from mmpretrain.models.backbones.efficientformer import Meta4D, Pooling
from mmpretrain.registry import MODELS

from petah_mm.models import DenseEfficientFormer
from petah_mm.models.backbones import box_pooling
from petah_mm.models.backbones.box_pooling import BoxPooling

SHAPES = [(2, 3, 1, 1), (1, 4, 2, 3), (2, 5, 7, 5), (1, 8, 14, 14)]


def saved_tensors(fn, x):
    """How many tensors autograd keeps for the backward of ``fn(x)``."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(x)
    return len(saved)


@pytest.mark.parametrize('size', [3, 5])
@pytest.mark.parametrize('shape', SHAPES)
def test_output_and_gradient_are_mmpretrains(shape, size):
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    grad = torch.randn(shape, dtype=torch.float64)
    outputs, grads = [], []
    for module in (Pooling(size), BoxPooling(size)):
        leaf = x.clone().requires_grad_()
        out = module(leaf)
        out.backward(grad)
        outputs.append(out)
        grads.append(leaf.grad)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-12, atol=1e-12)


def test_channels_last_and_bf16_inputs():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 11)
    reference = Pooling(3)(x)
    torch.testing.assert_close(BoxPooling(3)(x.contiguous(memory_format=torch.channels_last)), reference)
    low = x.bfloat16()
    out = BoxPooling(3)(low)
    assert out.dtype == torch.bfloat16
    # two roundings more than the pooling kernel (the scale and the product): a few bf16 steps at most
    torch.testing.assert_close(out.float(), Pooling(3)(low).float(), rtol=0, atol=4 * 2**-8 * low.abs().max().item())


def test_keeps_no_tensor_for_backward():
    x = torch.randn(2, 8, 14, 14, requires_grad=True)
    assert saved_tensors(Pooling(3), x) > 0
    assert saved_tensors(BoxPooling(3), x) == 0


def test_runs_in_the_input_dtype_under_autocast():
    x = torch.randn(1, 8, 7, 7)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = BoxPooling(3)(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, Pooling(3)(x))


def test_traces_and_other_devices_keep_the_pooling_operator():
    module = BoxPooling(3)
    graph = torch.jit.trace(module, torch.randn(1, 4, 7, 7)).inlined_graph
    assert any(node.kind() == 'aten::avg_pool2d' for node in graph.nodes())
    with mock.patch.object(box_pooling.BoxPoolingMinusInput, 'apply') as apply:
        assert module(torch.empty(1, 4, 7, 7, device='meta')).shape == (1, 4, 7, 7)
        apply.assert_not_called()
        module(torch.randn(1, 4, 7, 7))
        apply.assert_called_once()


def test_constants_made_in_inference_mode_serve_training():
    """The cached constants, first made by an inference, serve a later training step, a double backward (a
    gradient penalty) included: autograd saves the scale map there, which an inference tensor cannot be."""
    box_pooling.box_constants.cache_clear()
    x = torch.randn(1, 4, 6, 6)
    with torch.inference_mode():
        BoxPooling(3)(x)
    leaf = x.clone().requires_grad_()
    grad, = torch.autograd.grad(BoxPooling(3)(leaf).pow(2).sum(), leaf, create_graph=True)
    grad.sum().backward()
    reference = x.clone().requires_grad_()
    grad_reference, = torch.autograd.grad(Pooling(3)(reference).pow(2).sum(), reference, create_graph=True)
    grad_reference.sum().backward()
    torch.testing.assert_close(leaf.grad, reference.grad)


def test_dense_efficientformer_uses_it_in_every_meta4d_block():
    model = DenseEfficientFormer(arch='l1')
    blocks = [m for m in model.modules() if isinstance(m, Meta4D)]
    assert blocks and all(type(block.token_mixer) is BoxPooling for block in blocks)
    assert not any('token_mixer' in key and 'pool' in key for key in model.state_dict())


def plain_and_adapted(backbone: dict):
    """The plain backbone and PETAHBackbone's, with the same (random) weights, in eval mode."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        plain = MODELS.build(backbone)
        adapted = MODELS.build(dict(type='PETAHBackbone', backbone=backbone, adapter='petah2'))
    adapted.load_state_dict(plain.state_dict(), strict=False)
    plain.eval(), adapted.eval()  # mmpretrain's PoolFormer.train() returns None
    return plain, adapted


@pytest.mark.parametrize('backbone', [dict(type='PoolFormer', arch='s12'),
                                      dict(type='TIMMBackbone', model_name='poolformerv2_s12',
                                           pretrained=False, features_only=True)],
                         ids=['mmpretrain-poolformer', 'timm-poolformerv2'])
def test_petah_backbone_runs_any_pooling_token_mixer_as_the_box_filter(backbone):
    plain, adapted = plain_and_adapted(backbone)
    mixers = [type(m) for m in adapted.modules() if type(m) in box_pooling.POOLING_CLASSES + (BoxPooling, )]
    assert mixers and set(mixers) == {BoxPooling}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(adapted(x), plain(x)):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_only_the_exact_pooling_geometry_is_swapped():
    assert type(box_pooling.box_pooling_twin(Pooling(5))) is BoxPooling
    padded = Pooling(3)
    padded.pool.count_include_pad = True  # another average at the borders
    subclass = type('MyPooling', (Pooling, ), {})(3)  # its forward may differ
    assert box_pooling.box_pooling_twin(padded) is None and box_pooling.box_pooling_twin(subclass) is None
