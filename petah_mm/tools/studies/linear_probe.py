"""Linear probing on cached features: the optimisation mmengine's Runner runs for a frozen-backbone classification
config, with the backbone run once per image instead of once per image and epoch.

What makes it the same optimisation (``tests/tools/test_transfer_study.py`` checks it against the Runner):

* the model is built as the Runner builds it: the run's seed set first (``set_random_seed``, deterministic), then
  ``MODELS.build`` and ``init_weights``, so the head starts from the very weights the Runner's head starts from;
* the head, its loss (``head.loss``), the optimizer wrapper (``build_optim_wrapper``, gradient clipping
  included), the parameter schedulers (built as ``Runner._build_param_scheduler`` builds them, stepped per
  iteration as ``ParamSchedulerHook`` steps them), the epochs, the batch size and the batch order (the
  ``DefaultSampler``'s permutation of seed + epoch) are the config's;
* augmentation: the train pipeline's ``RandomFlip`` (right before ``PackInputs``) is replayed exactly. Both views
  of every training image are cached (the flipped one by mirroring the packed image, which draws no random
  number), and the flip of each sample is drawn by the pipeline's own ``RandomFlip`` from numpy's global RNG, in
  the order the Runner's single-process loader draws it (``num_workers=0`` is required for that). Any other
  random transform cannot be cached and is refused by name.

The features are what the head sees: the neck's last output, computed in eval mode. That equals training mode for
the frozen backbones petah_mm builds (``norm_eval``: BatchNorm keeps its statistics; the studied backbones have no
dropout). What differs from the Runner is the order of floating-point sums (features computed in other batches),
so results agree to rounding, not bit for bit.
"""
import copy
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, pseudo_collate
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DATASETS, MODELS, PARAM_SCHEDULERS, TRANSFORMS, init_default_scope
from mmengine.runner import set_random_seed

#: transforms that read no RNG: the cache holds their output
_DETERMINISTIC = {'LoadImageFromFile', 'Resize', 'PackInputs', 'ResizeEdge', 'CenterCrop'}


def build_model(cfg: Config) -> torch.nn.Module:
    """The config's model, seeded and initialised as ``Runner.from_cfg(cfg).train()`` builds it."""
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    set_random_seed(cfg.randomness.seed, deterministic=cfg.randomness.get('deterministic', False))
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # the Runner's rule: the top-level one unless the model has one
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def _views(pipeline: Sequence[dict]) -> Tuple[List[dict], Optional[dict]]:
    """(the train pipeline without its flip, the flip or None). Only a horizontal ``RandomFlip`` right before
    ``PackInputs`` is replayed: there, flipping the packed image equals flipping it in the pipeline, and the
    flipped view is cached without drawing from the RNG the Runner's flips draw from."""
    flips = [i for i, t in enumerate(pipeline) if t['type'] == 'RandomFlip']
    unknown = [t['type'] for t in pipeline if t['type'] not in _DETERMINISTIC | {'RandomFlip'}]
    if unknown or len(flips) > 1:
        raise ValueError(f'train pipeline transforms {unknown or ["RandomFlip"] * len(flips)}: linear probing on '
                         f'cached features replays one RandomFlip and no other random transform; probe through '
                         'the Runner instead, or drop them from train_pipeline')
    if not flips:
        return list(pipeline), None
    flip = dict(pipeline[flips[0]])
    if flip.get('direction', 'horizontal') != 'horizontal' or [t['type'] for t in pipeline[flips[0] + 1:]] != [
            'PackInputs']:
        raise ValueError(f'train pipeline {[t["type"] for t in pipeline]}: the cache replays a horizontal '
                         'RandomFlip right before PackInputs only; move it there or probe through the Runner')
    return [t for i, t in enumerate(pipeline) if i != flips[0]], flip


@torch.no_grad()
def extract(model: torch.nn.Module, dataset_cfg: dict, pipeline: Sequence[dict], batch_size: int,
            flipped: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
    """(features the head sees (N, C), labels (N,)) of every sample of the dataset, in index order; of the
    horizontally flipped images if ``flipped``."""
    dataset = DATASETS.build(dict(copy.deepcopy(dataset_cfg), pipeline=list(pipeline)))
    model.eval()
    features, labels = [], []
    for start in range(0, len(dataset), batch_size):
        batch = pseudo_collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        data = model.data_preprocessor(batch, False)
        inputs = data['inputs'].flip(-1) if flipped else data['inputs']
        features.append(model.extract_feat(inputs)[-1])
        labels.append(torch.cat([sample.gt_label for sample in data['data_samples']]))
    return torch.cat(features), torch.cat(labels)


def extract_splits(model: torch.nn.Module, cfg: Config) -> Dict[str, torch.Tensor]:
    """The cache of one frozen backbone: train features (and their flipped view, if the pipeline flips), val and
    test features, and their labels."""
    plain, flip = _views(cfg.train_dataloader.dataset.pipeline)
    train_set, batch = cfg.train_dataloader.dataset, cfg.train_dataloader.batch_size
    cache = {}
    cache['train'], cache['train_labels'] = extract(model, train_set, plain, batch)
    if flip is not None:
        cache['train_flipped'], _ = extract(model, train_set, plain, batch, flipped=True)
    for split in ('val', 'test'):
        loader = cfg[f'{split}_dataloader']
        cache[split], cache[f'{split}_labels'] = extract(model, loader.dataset, loader.dataset.pipeline,
                                                         loader.batch_size)
    return cache


def _schedulers(cfg: Config, optim_wrapper, epoch_length: int) -> list:
    """The config's parameter schedulers, as ``Runner._build_param_scheduler`` builds them."""
    schedulers, epochs = [], cfg.train_cfg.max_epochs
    for scheduler in copy.deepcopy(cfg.param_scheduler):
        scheduler.setdefault('end', epochs if scheduler.get('by_epoch', True) else epochs * epoch_length)
        schedulers.append(
            PARAM_SCHEDULERS.build(scheduler, default_args=dict(optimizer=optim_wrapper, epoch_length=epoch_length)))
    return schedulers


def train_probe(model: torch.nn.Module, cfg: Config, cache: Dict[str, torch.Tensor]) -> dict:
    """Train the head of ``model`` (built by :func:`build_model`) on ``cache`` as the Runner trains it; returns
    val and test top-1 (%), the mean training loss of the last epoch and seconds per epoch."""
    from mmpretrain.structures import DataSample
    loader = cfg.train_dataloader
    if loader.get('num_workers', 0) != 0 or not loader.sampler.get('shuffle', True) \
            or loader.sampler.type != 'DefaultSampler' or loader.get('drop_last', False):
        raise ValueError('train_dataloader: linear probing on cached features replays a single-process loader '
                         '(num_workers=0) over a shuffling DefaultSampler without drop_last; got '
                         f'{dict(loader, dataset="...")}')
    _, flip_cfg = _views(loader.dataset.pipeline)
    flip = None if flip_cfg is None else TRANSFORMS.build(flip_cfg)
    features, labels = cache['train'], cache['train_labels']
    sampler = DefaultSampler(range(len(labels)), shuffle=True, seed=cfg.randomness.seed)
    batches = -(-len(labels) // loader.batch_size)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    schedulers = _schedulers(cfg, optim_wrapper, batches)
    model.train()
    start, epochs = time.perf_counter(), cfg.train_cfg.max_epochs
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        order, losses = list(sampler), []
        for first in range(0, len(order), loader.batch_size):
            index = torch.tensor(order[first:first + loader.batch_size])
            x = features[index]
            if flip is not None:  # the flip each sample gets in the Runner, drawn in the same order from numpy's RNG
                flipped = torch.tensor([flip._choose_direction() is not None for _ in index])
                x = torch.where(flipped[:, None], cache['train_flipped'][index], x)
            samples = [DataSample().set_gt_label(label) for label in labels[index]]
            with optim_wrapper.optim_context(model):
                loss = model.head.loss((x, ), samples)['loss']
            optim_wrapper.update_params(loss)
            losses.append(loss.item())
            for scheduler in schedulers:
                if not scheduler.by_epoch:
                    scheduler.step()
        for scheduler in schedulers:
            if scheduler.by_epoch:
                scheduler.step()
    result = dict(epoch_s=round((time.perf_counter() - start) / epochs, 3), final_loss=sum(losses) / len(losses))
    model.eval()
    with torch.no_grad():
        for split in ('val', 'test'):
            predicted = model.head(((cache[split]), )).argmax(1)
            result[split] = 100.0 * (predicted == cache[f'{split}_labels']).float().mean().item()
    return result
