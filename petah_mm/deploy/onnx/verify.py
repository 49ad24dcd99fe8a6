"""``--verify``: the exported graph in ONNX Runtime against the PyTorch model, on real pipeline inputs.

The reference is the trained model as it is, adapters unmerged, so the check covers the merge and
the export together. Classification and segmentation compare logits: the largest absolute
difference over the largest reference magnitude must be at most 1e-4. Detection compares boxes,
labels, scores and masks (:mod:`.detection`).
"""
from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from .export import ExportedGraph
from .graphs import task_graph
from .inputs import pipeline_batches
from .runtime import cpu_session

LOGITS_RTOL = 1e-4


@dataclass
class Verification:
    lines: List[str] = field(default_factory=list)
    ok: bool = True

    def add(self, line: str, ok: bool) -> None:
        self.lines.append(f'{"ok  " if ok else "FAIL"} {line}')
        self.ok = self.ok and ok

    def report(self) -> str:
        return '\n'.join([*self.lines, f'verification {"passed" if self.ok else "FAILED"}'])


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
        from .detection import verify_detector
        return verify_detector(model, cfg, graph, num_images)
    return verify_logits(model, cfg, graph, num_images)
