"""int8: static QDQ quantization of an exported graph, calibrated on training images.

The calibration images are the first N of the config's training set, taken through the task's
test pipeline and data preprocessor (deterministic, at the graph's size: what the graph will see),
not through the training augmentations. Weights are quantized per output channel, activations per
tensor (MinMax calibration), in the QDQ format that ORT, TensorRT and QNN read. Shape arithmetic
(ops computed from ``Shape``, e.g. timm's ``Conv2dSame`` padding) stays in float: quantized, a pad of 1
pixel becomes 0.5 and the graph computes garbage (EfficientNet-Lite0: top-1 25 % -> 14 %).
"""
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, List, Optional

import onnx
from mmengine.config import Config
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from ...utils import check_output_path, write_bytes_atomic
from .exported import ExportedGraph, PathLike
from .inputs import pipeline_batches


class PipelineCalibration(CalibrationDataReader):
    """Feeds ``num_images`` training images, one at a time, as the graph's input."""

    def __init__(self, cfg: Config, model: nn.Module, graph: ExportedGraph, num_images: int):
        self.batches: Iterator[dict] = pipeline_batches(cfg, model, 'train', num_images, graph.shape)
        self.input_name, self.count = graph.input_name, 0

    def get_next(self) -> Optional[dict]:
        data = next(self.batches, None)
        if data is None:
            return None
        self.count += 1
        return {self.input_name: data['inputs'].numpy()}


def int8_path(path: PathLike) -> Path:
    path = Path(path)
    return path.with_name(f'{path.stem}.int8{path.suffix}')


def shape_arithmetic_nodes(model: onnx.ModelProto) -> List[str]:
    """Names of the nodes that compute from tensor shapes only: ``Shape`` and every node whose non-constant
    inputs all come from such nodes (in the graph's topological order)."""
    constant = {t.name for t in model.graph.initializer}
    derived, names = set(), []
    for node in model.graph.node:
        if node.op_type == 'Constant':
            constant.update(node.output)
            continue
        moving = [name for name in node.input if name and name not in constant]
        if node.op_type == 'Shape' or (moving and all(name in derived for name in moving)):
            derived.update(node.output)
            names.append(node.name)
    return names


def quantize_bytes(model: bytes, reader: CalibrationDataReader) -> bytes:
    """An fp32 ONNX model quantized: QDQ, int8 weights per channel and int8 activations, MinMax calibration."""
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        (work / 'fp32.onnx').write_bytes(model)
        # shapes inferred, BatchNorm and constants folded first: ORT's advice before quantizing
        quant_pre_process(str(work / 'fp32.onnx'), str(work / 'prepared.onnx'), skip_symbolic_shape=True)
        shape_nodes = shape_arithmetic_nodes(onnx.load(str(work / 'prepared.onnx')))
        quantize_static(str(work / 'prepared.onnx'), str(work / 'int8.onnx'), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=shape_nodes)
        return (work / 'int8.onnx').read_bytes()


def quantize_graph(graph: ExportedGraph, cfg: Config, model: nn.Module, num_images: int,
                   out_file: Optional[PathLike] = None, force: bool = False,
                   inputs: Iterable[PathLike] = ()) -> ExportedGraph:
    """Write ``out_file`` (default ``<graph>.int8.onnx``): ``graph`` with int8 weights and activations."""
    if graph.task == 'detection':
        raise NotImplementedError('int8 is implemented for classification and segmentation graphs; the detectors\' '
                                  'end2end graphs (NMS, RoIAlign, TopK) are not quantized by petah_mm')
    if num_images < 1:
        raise ValueError(f'--calib-images must be at least 1, got {num_images}')
    out_file = check_output_path(out_file or int8_path(graph.path), force, [*inputs, graph.path])
    reader = PipelineCalibration(cfg, model, graph, num_images)
    write_bytes_atomic(out_file, quantize_bytes(graph.path.read_bytes(), reader), force=True)
    print(f'int8: calibrated on {reader.count} training images')
    return ExportedGraph(out_file, graph.task, graph.shape, graph.input_name, graph.output_names)
