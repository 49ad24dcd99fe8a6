"""Export a trained task to ONNX with its adapters merged into the kernels.

The merged graph computes exactly what the plain backbone's graph computes (same ops, other
weights), so a device runs a PETAH task at the plain model's cost. Classification and
segmentation use ``torch.onnx.export`` (TorchScript exporter, opset 17); detection goes through
mmdeploy (:mod:`.detection`).

Sizes: the batch axis is dynamic where the backbone allows it (checked on the exported graph, else the
graph is exported for batch 1); height and width are fixed at export. EfficientFormer's last
stage resizes its attention-bias table to the token grid of the input, and the exported graph
holds the table for the export size only, so a graph accepts exactly the (H, W) it was exported at; so does a
timm ViT of dynamic image size, whose position embedding the graph holds for that size (:mod:`.position_grid`).
"""
import io
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

import numpy as np
import onnx
import torch
from mmengine.config import Config
from torch import nn

from ...utils import write_bytes_atomic
from .detection import export_detector
from .exported import OPSET, ExportedGraph, PathLike, merged
from .graphs import INPUT_NAME, OUTPUT_NAMES, task_graph, task_of
from .inputs import first_input_shape
from .position_grid import fixed_position_grid
from .runtime import cpu_session


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


def batch_axis_works(data: bytes, shape: Tuple[int, int], fixed_feeds: Optional[Dict] = None) -> bool:
    """Whether a graph exported with a dynamic batch computes a batch of 2 as two batches of 1.

    The TorchScript exporter records Python ints taken from shapes as constants, so a backbone that computes
    with its batch size in Python (mmdet's Swin windows) exports a "dynamic" batch axis that gives wrong
    results for any other batch, silently. This check catches it."""
    x = np.random.default_rng(0).standard_normal((2, 3, *shape), np.float32)
    feeds = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in (fixed_feeds or {}).items()}
    session = cpu_session(data)
    try:
        together = session.run(None, {INPUT_NAME: x, **feeds})
    except Exception:  # ORT refuses the shape: the batch axis is not dynamic
        return False
    alone = [session.run(None, {INPUT_NAME: x[i:i + 1], **feeds}) for i in range(2)]
    for index, output in enumerate(together):
        expected = np.concatenate([a[index] for a in alone])
        if output.shape != expected.shape or np.abs(output - expected).max() > 1e-4 * np.abs(expected).max():
            return False
    return True


def export_onnx(model: nn.Module, cfg: Config, out_file: PathLike, shape: Optional[Tuple[int, int]] = None,
                force: bool = False, inputs: Iterable[PathLike] = ()) -> ExportedGraph:
    """Write ``out_file``: ``model`` (a trained task) merged, as an ONNX graph for (N, 3, H, W) inputs.

    ``shape`` (H, W) defaults to the size of the first test image after the pipeline and the
    preprocessor. Existing outputs are refused unless ``force``; ``inputs`` are never overwritten."""
    task = task_of(cfg)
    model.eval()
    shape = tuple(shape) if shape else first_input_shape(cfg, model)
    if task == 'detection':
        return export_detector(model, cfg, out_file, shape, force=force, inputs=inputs)
    example = torch.zeros(1, 3, *shape)
    with merged(model), fixed_position_grid(model, shape):
        graph = task_graph(model, task, shape)
        data = onnx_bytes(graph, example, OUTPUT_NAMES[task], dynamic_batch=True)
        dynamic = batch_axis_works(data, shape)
        if not dynamic:  # the backbone bakes its batch size into the trace: say so in the graph's shape
            data = onnx_bytes(graph, example, OUTPUT_NAMES[task], dynamic_batch=False)
    onnx.checker.check_model(onnx.load_from_string(data))
    write_bytes_atomic(out_file, data, force, inputs)
    return ExportedGraph(Path(out_file), task, shape, INPUT_NAME, OUTPUT_NAMES[task], dynamic_batch=dynamic)
