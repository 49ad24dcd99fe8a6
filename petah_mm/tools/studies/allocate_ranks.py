"""Allocate per-layer adapter ranks for a parameter budget from the loss gradient (the ``petah-budget`` preset).

    python tools/analysis_tools/allocate_ranks.py CONFIG [--budget N] [--images 256] [--seed 0] [--out NEW.py]

Builds CONFIG's model (its pretrained weights, its head as initialised with ``--seed``) with the backbone frozen,
sums the loss gradient of every weight the config's adapter targets over ``--images`` images of its train
dataloader (train mode, the config's ``norm_eval``, no optimizer step), and gives each layer the rank its
gradient's singular values earn (:mod:`petah_mm.adapters.rank_budget`). The budget defaults to the config's
``adapter.budget``, else PETAH-2's trainable backbone parameters on this backbone. ``--out`` writes a config that
inherits CONFIG with the ranks in ``adapter.layer_ranks``; it prints the per-layer table either way.
"""
import argparse
import copy
import os
from pathlib import Path
from typing import Dict, Optional, Union

import torch
from mmengine.config import Config, DictAction
from mmengine.runner import Runner

from petah_mm.adapters import allocate_ranks, build_plan, layer_cost, preset, rank_gains, ranks_digest, resolve_targets
from petah_mm.models import build_backbone_from_config
from petah_mm.tools.analysis.count_params import report
from petah_mm.tools.studies import linear_probe
from petah_mm.utils import check_output_path, write_bytes_atomic

#: adapter keys that fix ranks: the budget's adapter has none of them
RANK_KEYS = ('rank', 'conv_rank', 'layer_ranks', 'budget')


def budget_adapter(adapter: Union[dict, str], budget: Union[str, int, None] = None) -> dict:
    """CONFIG's adapter (a dict or a preset name) with its ranks replaced by ``budget`` (default: its own budget,
    else ``'petah2'``): same method, factorization and settings."""
    adapter = preset(adapter) if isinstance(adapter, str) else copy.deepcopy(dict(adapter))
    if budget is None:
        budget = adapter.get('budget') or 'petah2'
    return dict({key: value for key, value in adapter.items() if key not in RANK_KEYS}, budget=budget)


def build_backbone(cfg: Config, adapter: dict):
    """CONFIG's backbone without pretrained weights under ``adapter`` (replaced whole, not merged into CONFIG's,
    whose ranks it may not sit beside): for counting parameters."""
    cfg = copy.deepcopy(cfg)
    cfg.model.backbone.adapter = adapter
    return build_backbone_from_config(cfg)


def resolve_budget(cfg: Config, budget: Union[str, int]) -> int:
    """A budget in parameters: a number as it is, a preset name as its trainable backbone parameters here."""
    if isinstance(budget, str):
        return sum(build_backbone(cfg, preset(budget)).trainable_by_group().values())
    return budget


def accumulate_gradients(model: torch.nn.Module, weights: Dict[str, torch.nn.Parameter], loader,
                         images: int) -> int:
    """Sum ∂loss/∂W of ``weights`` over the first ``images`` samples of ``loader`` (one pass at most) into their
    ``.grad``, each image weighing the same (a short last batch included); returns the images used."""
    model.train()
    model.requires_grad_(False)
    for weight in weights.values():
        weight.requires_grad_(True)
        weight.grad = None
    seen = 0
    for batch in loader:
        take = min(len(batch['inputs']), images - seen)
        batch = {key: value[:take] for key, value in batch.items()}
        data = model.data_preprocessor(batch, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        (loss * take).backward()
        seen += take
        if seen >= images:
            break
    return seen


def allocate(cfg: Config, budget: Union[str, int, None] = None, images: int = 256, seed: int = 0) -> dict:
    """Per-layer ranks for CONFIG's model and train data (module docstring): a JSON-ready record with the
    ``adapter`` to put in the config, ``layer_ranks``, each layer's ``groups``, the ``budget`` in parameters and
    what the ranks cost (``params``), the ``images`` measured, the ``seed`` and the ranks' ``digest``."""
    if type(images) is not int or images <= 0:
        raise ValueError(f'images must be a positive integer, got {images!r}')
    adapter = budget_adapter(cfg.model.backbone.get('adapter', 'petah2'), budget)
    if not build_plan(**adapter).adapters:
        raise ValueError(f'adapter method {adapter["method"]!r} injects no adapter, so it has no ranks to allocate; '
                         'give a config of petah, lora_attn or lora_attn_mlp')
    target = resolve_budget(cfg, adapter['budget'])
    measured = copy.deepcopy(cfg)
    measured.model.backbone.adapter = dict(method='frozen')  # the frozen weights themselves, no adapter
    measured.randomness = dict(seed=seed, deterministic=cfg.get('randomness', {}).get('deterministic', False))
    model = linear_probe.build_model(measured)
    backbone = model.backbone
    plan = backbone.fit_plan(build_plan(**adapter))
    groups = {name: group for group in plan.adapters
              for name in resolve_targets(backbone, backbone.target_patterns, group, plan.method)}
    weights = {name: backbone.get_submodule(name).weight for name in groups}
    costs = {name: layer_cost(plan.adapters[group], weights[name].shape) for name, group in groups.items()}
    used = accumulate_gradients(model, weights, Runner.build_dataloader(copy.deepcopy(cfg.train_dataloader),
                                                                        seed=seed), images)
    gains = {name: rank_gains(weight.grad) for name, weight in weights.items()}
    ranks = allocate_ranks(gains, costs, target)
    return dict(adapter=dict(adapter, budget=target, layer_ranks=ranks), layer_ranks=ranks, groups=groups,
                budget=target, budget_spec=adapter['budget'], params=sum(costs[n].at(r) for n, r in ranks.items()),
                images=used, seed=seed, digest=ranks_digest(ranks))


def config_text(base: Path, out: Path, record: dict) -> str:
    """A config inheriting ``base`` whose adapter is the record's, one layer per line."""
    adapter = dict(record['adapter'])
    ranks = adapter.pop('layer_ranks')
    relative = os.path.relpath(base.resolve(), out.resolve().parent)
    keys = ''.join(f'{key}={value!r}, ' for key, value in adapter.items())
    lines = ''.join(f'        {name!r}: {rank},\n' for name, rank in ranks.items())
    return (f'# Per-layer adapter ranks for a budget of {record["budget"]:,} trainable backbone parameters '
            f'({record["budget_spec"]!r}), spent: {record["params"]:,}.\n'
            '# Written by tools/analysis_tools/allocate_ranks.py from the loss gradient on '
            f'{record["images"]} training images (seed {record["seed"]}); ranks digest {record["digest"]}.\n'
            '# docs/petah_budget.md\n'
            f'_base_ = [{relative!r}]\n\n'
            'model = dict(backbone=dict(adapter=dict(\n'
            f'    _delete_=True, {keys}layer_ranks={{\n{lines}    }})))\n')


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='a petah_mm config whose adapter the ranks are for (petah2, petah-budget, ...)')
    parser.add_argument('--budget', help='trainable backbone parameters: a number, or a preset name whose count '
                                         'on this backbone it is (default: adapter.budget, else petah2)')
    parser.add_argument('--images', type=int, default=256, help='training images the gradient is summed over')
    parser.add_argument('--seed', type=int, default=0, help='seed of the head initialisation and the data order')
    parser.add_argument('--out', type=Path, help='write a config inheriting CONFIG with the ranks filled in')
    parser.add_argument('--force', action='store_true', help='overwrite --out if it exists')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override CONFIG settings for the measurement (the data root, say); --out does not keep '
                             'them')
    args = parser.parse_args(argv)
    budget: Optional[Union[str, int]] = args.budget
    if budget is not None and budget.isdigit():
        budget = int(budget)
    if args.out is not None:
        check_output_path(args.out, args.force, [args.config])  # before the work, not after it
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    record = allocate(cfg, budget, args.images, args.seed)
    print(report(build_backbone(cfg, record['adapter'])))
    if args.out is not None:
        write_bytes_atomic(args.out, config_text(Path(args.config), args.out, record).encode(), force=args.force,
                           inputs=[args.config])
        print(f'wrote {args.out} (ranks digest {record["digest"]})')
    return record


if __name__ == '__main__':
    main()
