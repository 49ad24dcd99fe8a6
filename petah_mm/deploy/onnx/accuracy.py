"""Top-1 accuracy of a classification graph in ONNX Runtime on the config's test set: what int8 costs."""
import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from .exported import ExportedGraph
from .inputs import pipeline_batches
from .runtime import cpu_session


def onnx_top1(graph: ExportedGraph, cfg: Config, model: nn.Module, num_images: int = 10**9) -> float:
    """Fraction of test images whose ORT argmax is their label (``model`` only supplies the preprocessor)."""
    if graph.task != 'classification':
        raise ValueError(f'top-1 accuracy needs a classification graph, got {graph.task}')
    session, hits, total = cpu_session(graph.path), 0, 0
    for data in pipeline_batches(cfg, model, 'test', num_images, graph.shape, batch_size=16):
        logits = session.run(None, {graph.input_name: data['inputs'].numpy()})[0]
        labels = torch.cat([sample.gt_label for sample in data['data_samples']]).numpy()
        hits += int((logits.argmax(1) == labels).sum())
        total += len(labels)
    return hits / total if total else float(np.nan)
