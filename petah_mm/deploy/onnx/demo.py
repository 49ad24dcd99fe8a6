"""``multitask_demo.py --runtime onnxruntime``: the task packages served from ONNX Runtime on one backbone graph.

The packages are loaded as ``MultiTaskModel`` loads them, exported to the shared form (one backbone graph
with the task tensors as inputs, a head graph per task: :mod:`.multitask`), and each task runs on the image
through its own test pipeline and preprocessor. The PyTorch model's output is printed beside ORT's.
"""
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch
from mmengine.dataset import Compose, pseudo_collate
from mmengine.registry import DefaultScope
from torch import nn

from ..multitask import MultiTaskModel
from .graphs import task_of
from .inputs import fit_to_shape
from .multitask import HeadGraph, OnnxMultiTask, export_multitask
from .verify import relative_difference


@torch.no_grad()
def image_input(model: nn.Module, image_path) -> torch.Tensor:
    """The image through the task's test pipeline (annotations dropped) and its data preprocessor."""
    cfg = model.cfg
    steps = [t for t in cfg.test_dataloader.dataset.pipeline if 'Annotations' not in t['type']]
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        batch = pseudo_collate([Compose(steps)(dict(img_path=str(image_path), img_id=0))])
        return model.data_preprocessor(batch, training=False)['inputs']


def summary(task: str, logits: np.ndarray) -> str:
    if task == 'classification':
        return f'class {int(logits[0].argmax())}'
    labels, counts = np.unique(logits[0].argmax(0), return_counts=True)
    return f'{len(labels)} classes in the label map, the largest {int(labels[counts.argmax()])}'


def run_onnx_demo(backbone_file, packages: Dict[str, str], image, out_dir) -> None:
    served = MultiTaskModel(backbone_file, packages, mode='routing')
    inputs = {task: image_input(model, image) for task, model in served.models.items()}
    shape = tuple(next(iter(inputs.values())).shape[-2:])
    inputs = {task: fit_to_shape(x, shape) for task, x in inputs.items()}
    configs = {task: model.cfg for task, model in served.models.items()}
    start = time.perf_counter()
    graphs = export_multitask(served.models, configs, shape, Path(out_dir) / 'onnx')
    print(f'exported in {time.perf_counter() - start:.1f} s: backbone graph {graphs.backbone} '
          f'({graphs.backbone.stat().st_size / 1e6:.1f} MB, held once), input {shape[0]}x{shape[1]}')
    runtime = OnnxMultiTask(graphs)
    for task, model in served.models.items():
        kind = task_of(model.cfg)
        feeds = sum(a.nbytes for a in graphs.feeds[task].values())
        start = time.perf_counter()
        logits = runtime.run(task, inputs[task].numpy())
        elapsed = 1e3 * (time.perf_counter() - start)
        with torch.no_grad():
            reference = HeadGraph(model.eval(), kind, shape).eval()(*model.backbone(inputs[task])).numpy()
        print(f'{task}: {summary(kind, logits)}; {elapsed:.1f} ms in ORT; its backbone tensors {feeds / 1e6:.2f} MB, '
              f'head graph {graphs.heads[task].stat().st_size / 1e6:.2f} MB; relative difference to PyTorch '
              f'{relative_difference(logits, reference):.2g}')
