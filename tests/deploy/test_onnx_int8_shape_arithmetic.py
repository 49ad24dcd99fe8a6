"""int8 leaves shape arithmetic in float: timm's Conv2dSame computes its padding from the input's shape in
the graph, and quantizing those few numbers (a pad of 1 becomes 0.5) broke EfficientNet-Lite0's int8 graph
(top-1 25 % -> 14 % on the animal set)."""
import numpy as np
import onnx
import torch
from timm.layers import Conv2dSame
from torch import nn

from petah_mm.deploy.onnx.export import onnx_bytes
from petah_mm.deploy.onnx.quantize import quantize_bytes, shape_arithmetic_nodes
from petah_mm.deploy.onnx.runtime import cpu_session
from petah_mm.deploy.onnx.verify import relative_difference

SHAPE = (1, 3, 17, 17)


class Images:
    """Eight seeded calibration inputs."""

    def __init__(self):
        generator = np.random.default_rng(0)
        self.images = iter([{'input': generator.standard_normal(SHAPE, np.float32)} for _ in range(8)])

    def get_next(self):
        return next(self.images, None)


def graph() -> bytes:
    torch.manual_seed(0)
    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.ReLU6(), Conv2dSame(8, 8, 3, stride=2)).eval()
    return onnx_bytes(model, torch.zeros(SHAPE), ['out'], dynamic_batch=True)


def test_shape_nodes_are_found_and_kept_in_float():
    fp32 = graph()
    names = shape_arithmetic_nodes(onnx.load_from_string(fp32))
    ops = {node.op_type for node in onnx.load_from_string(fp32).graph.node if node.name in names}
    assert 'Shape' in ops and not ops & {'Conv', 'Pad'}, ops
    int8 = quantize_bytes(fp32, Images())
    x = np.random.default_rng(1).standard_normal(SHAPE, np.float32)
    expected, actual = (cpu_session(g).run(None, {'input': x})[0] for g in (fp32, int8))
    difference = relative_difference(actual, expected)
    assert difference <= 0.05, f'int8 vs fp32: relative difference {difference:.3g} > 0.05 (a quantized pad?)'
    quantized = {node.op_type for node in onnx.load_from_string(int8).graph.node}
    assert 'QuantizeLinear' in quantized, 'nothing was quantized'
