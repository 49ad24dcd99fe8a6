"""EfficientNet-Lite0, its five stride-2 ``Conv2dSame`` adapted, exports: merged, its graph has the plain Lite0's
ops (the "same" pads computed from the input's shape, as timm's layer computes them) and runs in ONNX Runtime as
PyTorch does; in the multi-task form (adapter factors as inputs, the frozen BatchNorm after each adapted
convolution folded into it) it serves a task as PyTorch's unmerged backbone does."""
import collections
import copy

import onnx
import pytest
import torch
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from timm.layers import Conv2dSame

from petah_mm.adapters import adapt_layer
from petah_mm.adapters.layers import AdaptedSamePaddingConv2d
from petah_mm.deploy.onnx.export import onnx_bytes
from petah_mm.deploy.onnx.fold_norms import fold_norms, scaled_feeds
from petah_mm.deploy.onnx.multitask import BackboneWithTaskInputs, task_tensor_names
from petah_mm.deploy.onnx.quantize import shape_arithmetic_nodes
from petah_mm.deploy.onnx.runtime import cpu_session
from petah_mm.deploy.onnx.verify import relative_difference
from petah_mm.testing import randomise_adapters

TOLERANCE = 1e-5
LITE0 = dict(type='mmpretrain.TIMMBackbone', model_name='tf_efficientnet_lite0', pretrained=False, features_only=True,
             out_indices=(1, 2, 3, 4))
OUTPUTS = [f'feat{i}' for i in range(4)]


def random_batchnorm_(model, seed=0):
    """Random statistics and affine values in every BatchNorm (a fresh norm is the identity, and would hide a
    wrong fold)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, .5, 1.5), (module.bias, -.5, .5),
                                          (module.running_mean, -.5, .5), (module.running_var, .5, 2.)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)


@pytest.fixture(scope='module')
def lite0():
    """A PETAH-2 Lite0 (random frozen weights and norms, seeded random adapters) and an input of odd size: the
    stride-2 "same" pads are then uneven."""
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        backbone = MODELS.build(dict(type='PETAHBackbone', backbone=LITE0, adapter='petah2'))
    random_batchnorm_(backbone)
    randomise_adapters(backbone, std=0.05).eval()
    assert sum(isinstance(m, AdaptedSamePaddingConv2d) for m in backbone.modules()) == 5
    return backbone, torch.randn(2, 3, 65, 63, generator=torch.Generator().manual_seed(1))


def ops(graph: bytes) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load_from_string(graph).graph.node)


@pytest.mark.parametrize('cls', [Conv2dSame, Conv2dAdaptivePadding], ids=lambda c: c.__name__)
def test_a_merged_layer_traces_to_its_plain_class_ops(cls):
    """timm's pads follow the input's shape in the graph, mmcv's are constants of the export size: each merged
    layer records what its own class records."""
    plain = cls(4, 6, 3, stride=2).eval()
    layer = randomise_adapters(adapt_layer('conv', copy.deepcopy(plain), dict(type='lora', rank=2)), std=0.2).eval()
    layer.merge()
    plain.weight.data = layer.weight.detach().clone()
    x = torch.randn(1, 4, 15, 16)
    merged, reference = (onnx_bytes(m, x, ['out'], dynamic_batch=True) for m in (layer, plain))
    assert ops(merged) == ops(reference), (ops(merged), ops(reference))
    assert relative_difference(*(cpu_session(g).run(None, {'input': x.numpy()})[0] for g in (merged, reference))) \
        <= TOLERANCE


def test_merged_graph_is_the_plain_lite0_graph(lite0):
    backbone, x = lite0
    with torch.no_grad():
        expected = [f.numpy() for f in backbone(x)]
    backbone.merge_adapters()
    try:
        merged = onnx_bytes(backbone, x[:1], OUTPUTS, dynamic_batch=True)
        state = {k: v for k, v in backbone.state_dict().items() if '.adapter.' not in k}
    finally:
        backbone.unmerge_adapters()
    plain = MODELS.build(backbone.plain_backbone_config())
    plain.eval()  # TIMMBackbone.train returns None
    plain.load_state_dict(state, strict=True)
    assert sum(type(m) is Conv2dSame for m in plain.modules()) == 5
    reference = onnx_bytes(plain, x[:1], OUTPUTS, dynamic_batch=True)
    assert ops(merged) == ops(reference), f'only merged: {ops(merged) - ops(reference)}; only plain: ' \
                                          f'{ops(reference) - ops(merged)}'
    assert shape_arithmetic_nodes(onnx.load_from_string(merged)), 'the "same" pads no longer follow the input'
    actual = cpu_session(merged).run(None, {'input': x.numpy()})
    for level, (a, e) in enumerate(zip(actual, expected)):
        assert relative_difference(a, e) <= TOLERANCE, f'level {level}: {relative_difference(a, e):.3g}'


def test_multitask_graph_folds_the_norms_after_same_padding_convs(lite0):
    backbone, x = lite0
    names = task_tensor_names(backbone)
    assert 'timm_model.conv_stem.adapter.lora_A' in names
    folded, scales = fold_norms(backbone, x[:1], names)
    assert 'timm_model.conv_stem.adapter.lora_B' in scales  # Conv2dSame -> bn1, folded like any conv
    feeds = scaled_feeds(backbone.state_dict(), names, scales)
    graph = onnx_bytes(BackboneWithTaskInputs(folded, names), x[:1], OUTPUTS, True, feeds)
    assert ops(graph)['BatchNormalization'] == 0, ops(graph)
    with torch.no_grad():
        expected = [f.numpy() for f in backbone(x)]
    actual = cpu_session(graph).run(None, {'input': x.numpy(), **{k: v.numpy() for k, v in feeds.items()}})
    for level, (a, e) in enumerate(zip(actual, expected)):
        assert relative_difference(a, e) <= TOLERANCE, f'level {level}: {relative_difference(a, e):.3g}'
