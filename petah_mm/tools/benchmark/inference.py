"""Inference latency of the plain, merged and unmerged backbones."""
import functools
import itertools

import torch

from petah_mm.testing import randomise_adapters
from petah_mm.utils.timing import interleaved_medians_ms
from .common import autocast, backbone_for, precisions, row_name


def inference(args):
    """Latency of plain, merged and unmerged backbones at each of --inference-batches, interleaved in
    rotating order so that drift and cache effects hit all alike."""
    models = {'plain': backbone_for(args, 'frozen').eval()}
    for n in (1, 2):
        unmerged = backbone_for(args, f'petah{n}').eval()
        randomise_adapters(unmerged)
        merged = backbone_for(args, f'petah{n}').eval()
        merged.load_state_dict(unmerged.state_dict())
        merged.merge_adapters()
        models[f'petah{n} merged'], models[f'petah{n} unmerged'] = merged, unmerged
    results = {}
    for batch, precision in itertools.product(args.inference_batches, precisions(args)):
        x = torch.randn(batch, 3, args.size, args.size, device=args.device)
        with torch.no_grad(), autocast(args, precision):
            medians = interleaved_medians_ms({name: functools.partial(model, x) for name, model in models.items()},
                                             args.warmup, args.repeats * args.rounds, args.device)
        for name, ms in medians.items():
            row = dict(batch=batch, ms=ms, ratio=ms / medians['plain'])
            if name.endswith(' unmerged'):
                row['ratio_to_merged'] = ms / medians[name.replace(' unmerged', ' merged')]
            results[row_name(f'{name}, batch {batch}', precision)] = row
    return results
