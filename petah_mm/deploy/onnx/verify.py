"""``--verify``: the exported graph in ONNX Runtime against the PyTorch model, on real pipeline inputs.

The reference is the trained model as it is, adapters unmerged, so the check covers the merge and
the export together. Classification and segmentation compare logits: the largest absolute
difference over the largest reference magnitude must be at most 1e-4. Detection compares boxes,
labels, scores and masks (:mod:`.detection`).
"""
import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from .detection import verify_detector
from .exported import ExportedGraph, Verification
from .graphs import task_graph
from .inputs import pipeline_batches
from .runtime import cpu_session

LOGITS_RTOL = 1e-4


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: the error on the logits' own scale."""
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), np.finfo(np.float32).tiny))


def verify_logits(model: nn.Module, cfg: Config, graph: ExportedGraph, num_images: int,
                  rtol: float = LOGITS_RTOL) -> Verification:
    session, result = cpu_session(graph.path), Verification()
    reference = task_graph(model.eval(), graph.task, graph.shape)
    for index, data in enumerate(pipeline_batches(cfg, model, 'test', num_images, graph.shape)):
        with torch.no_grad():
            expected = reference(data['inputs']).numpy()
        actual = session.run(None, {graph.input_name: data['inputs'].numpy()})[0]
        rel = relative_difference(actual, expected)
        same = float((actual.argmax(1) == expected.argmax(1)).mean())
        result.add(f'image {index}: {graph.output_names[0]} {tuple(actual.shape)}, max |ORT - PyTorch| '
                   f'{np.abs(actual - expected).max():.3g}, max |PyTorch| {np.abs(expected).max():.3g}, relative '
                   f'{rel:.3g} (tolerance {rtol:g}); same argmax {same:.1%}', rel <= rtol)
    return result


def verify_export(model: nn.Module, cfg: Config, graph: ExportedGraph, num_images: int = 4) -> Verification:
    if graph.task == 'detection':
        return verify_detector(model, cfg, graph, num_images)
    return verify_logits(model, cfg, graph, num_images)
