"""``--runtime onnxruntime``: the same backbones in ONNX Runtime (CPU), next to PyTorch's rows.

Rows, at each of --inference-batches: the plain backbone; PETAH-2 merged (fp32); PETAH-2 in the
multi-task form (unmerged, its adapter factors and output norms fed as graph inputs: one backbone
graph serves every task, :mod:`petah_mm.deploy.onnx.multitask`; frozen BatchNorms folded); PETAH-2
merged int8 (static QDQ, calibrated on 8 random normal images: the trunk benchmark has no dataset;
latency only).
"""
import functools

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader

from petah_mm.deploy.onnx.export import onnx_bytes
from petah_mm.deploy.onnx.fold_norms import fold_norms, scaled_feeds
from petah_mm.deploy.onnx.multitask import BackboneWithTaskInputs, task_tensor_names
from petah_mm.deploy.onnx.quantize import quantize_bytes
from petah_mm.deploy.onnx.runtime import cpu_session
from petah_mm.testing import randomise_adapters
from petah_mm.utils.timing import interleaved_medians_ms
from .common import backbone_for

CALIBRATION_IMAGES = 8


class RandomImages(CalibrationDataReader):

    def __init__(self, size: int):
        generator = np.random.default_rng(0)
        self.images = iter([{'input': generator.standard_normal((1, 3, size, size), np.float32)}
                            for _ in range(CALIBRATION_IMAGES)])

    def get_next(self):
        return next(self.images, None)


def graphs(args) -> dict:
    """name -> (ONNX bytes, extra feeds) of the four backbones, all at --size, dynamic batch."""
    plain = backbone_for(args, 'frozen').cpu().eval()
    unmerged = backbone_for(args, 'petah2').cpu().eval()
    randomise_adapters(unmerged)
    example = torch.zeros(1, 3, args.size, args.size)
    outputs = [f'feat{i}' for i in range(len(plain(example)))]
    names = task_tensor_names(unmerged)
    folded, scales = fold_norms(unmerged, example, names)
    feeds = scaled_feeds(unmerged.state_dict(), names, scales)
    shared = onnx_bytes(BackboneWithTaskInputs(folded, names), example, outputs, True, feeds)
    unmerged.merge_adapters()
    merged = onnx_bytes(unmerged, example, outputs, True)
    return {'ORT plain': (onnx_bytes(plain, example, outputs, True), {}),
            'ORT petah2 merged': (merged, {}),
            'ORT petah2 multi-task form': (shared, {k: v.numpy() for k, v in feeds.items()}),
            'ORT petah2 merged int8': (quantize_bytes(merged, RandomImages(args.size)), {})}


def onnx_inference(args) -> dict:
    sessions = {name: (cpu_session(model, torch.get_num_threads()), feeds) for name, (model, feeds) in
                graphs(args).items()}
    results = {}
    for batch in args.inference_batches:
        x = np.random.default_rng(1).standard_normal((batch, 3, args.size, args.size), np.float32)
        medians = interleaved_medians_ms(
            {name: functools.partial(session.run, None, {'input': x, **feeds})
             for name, (session, feeds) in sessions.items()}, args.warmup, args.repeats * args.rounds)
        for name, ms in medians.items():
            row = dict(batch=batch, ms=ms, ratio=ms / medians['ORT plain'])
            if name != 'ORT plain':
                row['ratio_to_merged'] = ms / medians['ORT petah2 merged']
            results[f'{name}, batch {batch}'] = row
    return results
