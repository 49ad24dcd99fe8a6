"""The multi-task graph's BatchNorm folding: the frozen norm after each adapted LoRA convolution goes into
its frozen kernel and into the task's fed B, leaving no BatchNorm node, and each task's ORT output is its
own PyTorch backbone's."""
import collections

import numpy as np
import onnx
import pytest
import torch

from petah_mm.deploy.onnx.export import onnx_bytes
from petah_mm.deploy.onnx.fold_norms import fold_norms, scaled_feeds
from petah_mm.deploy.onnx.multitask import BackboneWithTaskInputs, task_tensor_names
from petah_mm.deploy.onnx.runtime import cpu_session
from petah_mm.deploy.onnx.verify import relative_difference
from petah_mm.testing import randomise_adapters

TOLERANCE = 1e-5


@pytest.fixture(scope='module')
def tasks():
    """Two tasks on one EF-L1 backbone: shared random BatchNorm statistics (a fresh norm is the identity and
    would hide a wrong fold), adapters of seeds 0 and 1."""
    from petah_mm.models import PETAHEfficientFormer
    generator = torch.Generator().manual_seed(0)
    backbone = PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', conv_rank=2)).eval()
    with torch.no_grad():
        for module in backbone.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, .5, 1.5), (module.bias, -.5, .5),
                                          (module.running_mean, -.5, .5), (module.running_var, .5, 2.)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    states = [{k: v.clone() for k, v in randomise_adapters(backbone, seed=seed, std=0.1).state_dict().items()}
              for seed in (0, 1)]
    return backbone, states


def test_folded_graph_has_no_batchnorm_and_serves_each_task(tasks):
    backbone, states = tasks
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    names = task_tensor_names(backbone)
    folded, scales = fold_norms(backbone, x[:1], names)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    assert len(scales) == norms > 0, f'folded {len(scales)} of {norms} norms'
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules()) == norms, 'the original changed'
    graph = onnx_bytes(BackboneWithTaskInputs(folded, names), x[:1], ['features'], True,
                       scaled_feeds(states[0], names, scales))
    ops = collections.Counter(node.op_type for node in onnx.load_from_string(graph).graph.node)
    assert ops['BatchNormalization'] == 0, ops
    session = cpu_session(graph)
    outputs = []
    for state in states:
        backbone.load_state_dict(state)
        with torch.no_grad():
            expected = backbone(x)[-1].numpy()
        feeds = {k: v.numpy() for k, v in scaled_feeds(state, names, scales).items()}
        actual = session.run(None, {'input': x.numpy(), **feeds})[-1]
        difference = relative_difference(actual, expected)
        assert difference <= TOLERANCE, f'ORT vs PyTorch: relative difference {difference:.3g} > {TOLERANCE:g}'
        outputs.append(actual)
    assert relative_difference(outputs[0], outputs[1]) > 1e-3, 'the two tasks gave the same output'


def test_a_norm_that_trains_with_the_task_is_not_folded(tasks):
    backbone, _ = tasks
    x = torch.zeros(1, 3, 64, 64)
    names = task_tensor_names(backbone)
    first_norm = next(name for name, m in backbone.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    folded, scales = fold_norms(backbone, x, [*names, f'{first_norm}.weight'])
    assert isinstance(folded.get_submodule(first_norm), torch.nn.BatchNorm2d)
    assert len(scales) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules()) - 1
    with torch.no_grad():
        expected, actual = backbone(x)[-1].numpy(), folded(x)[-1].numpy()
    assert relative_difference(actual, expected) <= TOLERANCE
    assert np.isfinite(actual).all()
