"""``export_onnx.py --compare-plain``: a PETAH task's merged graph against the plain model's graph.

A merged task must cost what the plain backbone costs on a device: its graph must hold the same ops as the
graph of the plain model (no adapter) that its merged weights load into (``export_merged.py``), exported the
same way at the same size. The check builds that plain model, exports it (and quantizes it, for an int8 graph,
on the same calibration images) and compares the op histograms, naming the ops that differ.
"""
import collections
import tempfile
from pathlib import Path
from typing import List, Optional

import onnx
from mmengine.config import Config
from torch import nn

from ..merged import export_merged
from ..packages import build_trained_model
from .export import export_onnx
from .exported import ExportedGraph, Verification
from .quantize import quantize_graph


def op_histogram(path) -> collections.Counter:
    """How many nodes of each op type the graph at ``path`` holds."""
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def compare_ops(what: str, graph: Path, reference: Path) -> tuple:
    """``(line, equal)``: whether ``graph`` holds the ops of ``reference``, and the ops each has in excess."""
    ours, theirs = op_histogram(graph), op_histogram(reference)
    if ours == theirs:
        return f'{what}: the plain model\'s op histogram ({sum(ours.values())} nodes, {len(ours)} op types)', True
    return (f'{what}: ops only in the PETAH graph {dict(ours - theirs)}, only in the plain graph '
            f'{dict(theirs - ours)}'), False


def compare_with_plain(model: nn.Module, cfg: Config, graphs: List[ExportedGraph],
                       calib_images: Optional[int] = None) -> Verification:
    """Export the plain twin of ``model`` at the first graph's size (and its int8 graph, on ``calib_images``,
    when ``graphs`` holds an int8 one as second) and compare the op histograms of each pair."""
    result = Verification(what='op comparison')
    with tempfile.TemporaryDirectory(prefix='petah-plain-') as work:
        work = Path(work)
        export_merged(model, cfg, work / 'plain.pth')
        plain_cfg, plain, _ = build_trained_model(str(work / 'plain.py'), str(work / 'plain.pth'))
        reference = export_onnx(plain, plain_cfg, work / 'plain.onnx', shape=graphs[0].shape)
        result.add(*compare_ops(f'fp32 graph {graphs[0].path.name}', graphs[0].path, reference.path))
        if len(graphs) > 1:
            reference8 = quantize_graph(reference, plain_cfg, plain, calib_images, work / 'plain.int8.onnx')
            result.add(*compare_ops(f'int8 graph {graphs[1].path.name}', graphs[1].path, reference8.path))
    return result
