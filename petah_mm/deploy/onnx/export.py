"""Export a trained task to ONNX with its adapters merged into the kernels.

The merged graph computes exactly what the plain backbone's graph computes (same ops, other
weights), so a device runs a PETAH task at the plain model's cost. Classification and
segmentation use ``torch.onnx.export`` (TorchScript exporter, opset 17); detection goes through
mmdeploy (:mod:`.detection`).

Sizes: the batch axis is dynamic; height and width are fixed at export. EfficientFormer's last
stage resizes its attention-bias table to the token grid of the input, and the exported graph
holds the table for the export size only, so a graph accepts exactly the (H, W) it was exported at.
"""
import io
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import onnx
import torch
from mmengine.config import Config
from torch import nn

from ...utils import write_bytes_atomic
from .graphs import INPUT_NAME, OUTPUT_NAMES, task_graph, task_of
from .inputs import first_input_shape

OPSET = 17
PathLike = Union[str, Path]


@dataclass
class ExportedGraph:
    path: Path
    task: str
    shape: Tuple[int, int]
    input_name: str
    output_names: Tuple[str, ...]
    dynamic_batch: bool = True

    def describe(self) -> str:
        batch = 'N' if self.dynamic_batch else '1'
        return (f'{self.path} ({self.path.stat().st_size / 1e6:.1f} MB, {self.task}): input {self.input_name!r} '
                f'({batch}, 3, {self.shape[0]}, {self.shape[1]}), {"dynamic" if self.dynamic_batch else "fixed"} '
                'batch, height and width fixed; outputs '
                f'{", ".join(map(repr, self.output_names))}')


@contextmanager
def merged(model: nn.Module):
    """``model`` with its backbone's adapters merged (if it has any), unmerged again afterwards."""
    backbone = model.backbone
    merge = hasattr(backbone, 'merge_adapters') and not backbone.is_merged
    if merge:
        backbone.merge_adapters()
    try:
        yield model
    finally:
        if merge:
            backbone.unmerge_adapters()


def onnx_bytes(graph: nn.Module, example: torch.Tensor, output_names: Iterable[str], dynamic_batch: bool,
               fixed_inputs: Optional[Dict[str, torch.Tensor]] = None) -> bytes:
    """``graph`` traced on ``example`` (and ``fixed_inputs``, graph inputs after the image whose shapes do not
    follow the batch) and exported in memory (TorchScript exporter, opset 17)."""
    output_names, fixed_inputs = list(output_names), fixed_inputs or {}
    axes = {name: {0: 'batch'} for name in (INPUT_NAME, *output_names)} if dynamic_batch else None
    buffer = io.BytesIO()
    graph.eval()  # torch.onnx.export restores the wrapper's mode, and a new wrapper's is training
    with torch.no_grad():
        torch.onnx.export(graph, (example, *fixed_inputs.values()), buffer, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME, *fixed_inputs], output_names=output_names, dynamic_axes=axes,
                          do_constant_folding=True)
    return buffer.getvalue()


def export_onnx(model: nn.Module, cfg: Config, out_file: PathLike, shape: Optional[Tuple[int, int]] = None,
                force: bool = False, inputs: Iterable[PathLike] = ()) -> ExportedGraph:
    """Write ``out_file``: ``model`` (a trained task) merged, as an ONNX graph for (N, 3, H, W) inputs.

    ``shape`` (H, W) defaults to the size of the first test image after the pipeline and the
    preprocessor. Existing outputs are refused unless ``force``; ``inputs`` are never overwritten."""
    task = task_of(cfg)
    model.eval()
    shape = tuple(shape) if shape else first_input_shape(cfg, model)
    if task == 'detection':
        from .detection import export_detector
        return export_detector(model, cfg, out_file, shape, force=force, inputs=inputs)
    example = torch.zeros(1, 3, *shape)
    with merged(model):
        data = onnx_bytes(task_graph(model, task, shape), example, OUTPUT_NAMES[task], dynamic_batch=True)
    onnx.checker.check_model(onnx.load_from_string(data))
    write_bytes_atomic(out_file, data, force, inputs)
    return ExportedGraph(Path(out_file), task, shape, INPUT_NAME, OUTPUT_NAMES[task])
