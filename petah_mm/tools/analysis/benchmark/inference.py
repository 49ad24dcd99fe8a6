"""Inference latency of the plain, merged and unmerged backbones.

The unmerged backbones run each LoRA layer in the inference form measured faster on this machine
(:func:`petah_mm.adapters.form_choice.tune_unmerged_forms`, cached per CPU outside the checkout) at
each batch and precision, as a serving process would after tuning once; ``--unmerged-forms flops``
keeps the FLOPs rule, ``both`` adds rows of unmerged backbones that keep it, to compare. The 'pooling'
ablation adds the plain and PETAH-2 backbones with mmpretrain's pooling token mixers, same weights and forms.
"""
import copy
import functools
import itertools

import torch

from petah_mm.adapters.form_choice import tune_unmerged_forms
from petah_mm.testing import randomise_adapters
from petah_mm.utils.timing import interleaved_medians_ms
from .ablations import avgpool_token_mixers
from .common import autocast, backbone_for, precisions, row_name

#: the name suffix of the rows whose unmerged backbone keeps the FLOPs rule (``--unmerged-forms both``)
FLOPS_RULE = ' (FLOPs rule)'
#: the name suffix of the rows with mmpretrain's AvgPool2d token mixers (the 'pooling' ablation)
AVGPOOL = ' (AvgPool2d token mixer)'


def with_avgpool(model):
    """The same model with mmpretrain's pooling token mixers, or None where it has no box-filter pooling."""
    twin = copy.deepcopy(model)
    return twin if avgpool_token_mixers(twin) else None


def inference_models(args) -> dict:
    models = {'plain': backbone_for(args, 'frozen').eval()}
    for n in (1, 2):
        unmerged = backbone_for(args, f'petah{n}').eval()
        randomise_adapters(unmerged)
        merged = backbone_for(args, f'petah{n}').eval()
        merged.load_state_dict(unmerged.state_dict())
        merged.merge_adapters()
        models[f'petah{n} merged'], models[f'petah{n} unmerged'] = merged, unmerged
        if args.unmerged_forms == 'both':
            models[f'petah{n} unmerged{FLOPS_RULE}'] = backbone_for(args, f'petah{n}').eval()
            models[f'petah{n} unmerged{FLOPS_RULE}'].load_state_dict(unmerged.state_dict())
    if 'pooling' in args.ablations:  # what the adapters cost with the pooling that mmpretrain runs
        twins = {f'{name}{AVGPOOL}': with_avgpool(models[name])
                 for name in ('plain', 'petah2 merged', 'petah2 unmerged')}
        models.update({name: twin for name, twin in twins.items() if twin is not None})
    return models


def merged_row(name: str) -> str:
    """The merged row an unmerged row is compared with: same rank and pooling, whatever rule its forms follow."""
    return name.split(' unmerged')[0] + ' merged' + (AVGPOOL if name.endswith(AVGPOOL) else '')


def inference(args):
    """Latency of plain, merged and unmerged backbones at each of --inference-batches, interleaved in
    rotating order so that drift and cache effects hit all alike. Returns the rows and, per tuned row,
    the summary of its choice of forms."""
    models = inference_models(args)
    results, forms = {}, {}
    for batch, precision in itertools.product(args.inference_batches, precisions(args)):
        x = torch.randn(batch, 3, args.size, args.size, device=args.device)
        with torch.no_grad(), autocast(args, precision):
            if args.unmerged_forms != 'flops':  # the AvgPool2d twin after its model: same layers, the cached forms
                for name in [name for name in models if ' unmerged' in name and FLOPS_RULE not in name]:
                    forms[row_name(f'{name}, batch {batch}', precision)] = tune_unmerged_forms(models[name], x)
            medians = interleaved_medians_ms({name: functools.partial(model, x) for name, model in models.items()},
                                             args.warmup, args.repeats * args.rounds, args.device)
        for name, ms in medians.items():
            row = dict(batch=batch, ms=ms, ratio=ms / medians['plain'])
            if ' unmerged' in name:
                row['ratio_to_merged'] = ms / medians[merged_row(name)]
            results[row_name(f'{name}, batch {batch}', precision)] = row
    return results, forms
