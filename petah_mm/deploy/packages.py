"""Task packages: what one task adds to a shared backbone, and the shared backbone itself.

A package is a directory with three files:

* ``adapter.safetensors``: the backbone's task tensors (adapter factors, or the weights the
  method trains), checked against the shared weights' fingerprint when loaded;
* ``task.safetensors``: everything else the task owns (neck, heads, the backbone's output
  norms), and the dataset meta (class names);
* ``config.json``: what serving the task needs, as JSON data (:func:`package_config`): the library
  (``default_scope``), the model without its training settings and without any source of weights,
  and the test pipeline.

The shared backbone is one ``backbone.safetensors`` for all tasks. A package is pure data:
nothing is unpickled, and the config is parsed with a bounded JSON reader, never executed like a
``.py`` config, and read against an allow-list of types, arguments and values
(:mod:`petah_mm.deploy.package_schema`) before anything is built. Each file records the package's
random task id, so a file copied in from another package is refused. A loaded task must give
finite outputs on a probe image, with its adapters unmerged and merged (:func:`probe_task`).
"""
import copy
import json
import math
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_checkpoint
from mmengine.structures import BaseDataElement
from torch import nn

from ..adapters.io import (AdapterFileError, check_task_id, check_tensors, fingerprint, read_tensor_file,
                           write_tensor_file)
from ..compat import short_text
from ..models import without_pretrained
from ..utils import atomic_write
from ..utils.fileio import default_mode, publish_directory, staging_directory
from ..utils.json_data import DataError, parse_json_data
from .package_schema import SchemaError, check_package_config, quote
from .pipeline import ImagePipeline

CONFIG_FILE = 'config.json'
#: the largest ``config.json`` a package may have, in bytes: petah_mm's own are 2 to 8 KB
MAX_CONFIG_BYTES = 1 << 20
#: a task id, as :func:`export_task_package` draws it
TASK_ID = re.compile(r'[0-9a-f]{32}')
#: the model's own data preprocessor type when a config leaves it out (mmpretrain's ImageClassifier adds it)
DEFAULT_PREPROCESSOR = dict(mmpretrain='ClsDataPreprocessor')
#: head arguments that mmdet's detectors fill in from the model's ``train_cfg`` and ``test_cfg`` when built
#: (and so write into the config they build from)
INJECTED_HEAD_ARGS = dict(rpn_head=('train_cfg', 'test_cfg'), roi_head=('train_cfg', 'test_cfg'))
#: the probe image every loaded task must give finite outputs on (height, width): small, so that its resize steps
#: scale it up to the size the task tests at
PROBE_SIZE = (64, 64)
#: the RPN proposals a two-stage detector's probe runs its RoI heads on
PROBE_PROPOSALS = 16

PathLike = Union[str, Path]


def shared_backbone_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return model.backbone.shared_state_dict()


def task_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Every tensor of the task model that is neither shared backbone weight nor adapter."""
    backbone = model.backbone
    not_task = {f'backbone.{k}' for k in (*backbone.shared_state_dict(), *backbone.task_state_dict())}
    return {k: v for k, v in model.state_dict().items() if k not in not_task}


def export_shared_backbone(model: nn.Module, path: PathLike, force: bool = False) -> int:
    """The frozen weights that every task on this backbone shares, stored once."""
    state = shared_backbone_state(model)
    meta = dict(arch=model.backbone.arch_name, frozen_fingerprint=fingerprint(state.items()))
    return write_tensor_file(path, state, meta, kind='backbone', force=force)


def export_task_package(model: nn.Module, cfg: Config, out_dir: PathLike,
                        dataset_meta: Optional[dict] = None) -> Dict[str, int]:
    """Write a package for a trained task model; returns each file's size in bytes.

    The package is assembled in a temporary sibling directory of this writer's own and renamed
    into place, so an interrupted export never leaves a package that looks complete, and of two
    concurrent exports to one directory exactly one wins (:func:`petah_mm.utils.fileio.publish_directory`).
    A config the package schema would refuse is refused before anything is written.
    """
    config = package_config(cfg)
    out_dir = Path(out_dir)
    if out_dir.exists():  # early, before the work; publishing refuses it again
        raise FileExistsError(f'{out_dir} exists; remove it or choose another package directory')
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_directory(out_dir)
    task_id = uuid.uuid4().hex
    try:
        sizes = dict(adapter=model.backbone.save_adapter(staging / 'adapter.safetensors', task_id=task_id),
                     task=write_tensor_file(staging / 'task.safetensors', task_state(model),
                                            dict(default_scope=cfg.default_scope, dataset_meta=dataset_meta,
                                                 task_id=task_id), kind='task'))
        with atomic_write(staging / CONFIG_FILE, 'w') as f:
            f.write(json.dumps(dict(task_id=task_id, config=config), indent=1))
        sizes['config'] = (staging / CONFIG_FILE).stat().st_size
        staging.chmod(default_mode(directory=True))
        publish_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sizes


def package_config(cfg: Config) -> dict:
    """What a package's ``config.json`` holds of a training config, as JSON data: the library, the model
    (its top-level data preprocessor moved in, as the Runner does; without ``train_cfg``; without any source of
    weights: :func:`petah_mm.models.without_pretrained`) and the test pipeline. Refused, naming the key, if
    the package schema would refuse it (a module type of your own: :func:`register_package_type`)."""
    model = copy.deepcopy(cfg.to_dict()['model'])
    scope = cfg.get('default_scope')
    preprocessor = model.get('data_preprocessor') or cfg.get('data_preprocessor')
    if preprocessor is not None:
        preprocessor = dict(copy.deepcopy(preprocessor))
        if scope in DEFAULT_PREPROCESSOR:
            preprocessor.setdefault('type', DEFAULT_PREPROCESSOR[scope])
        model['data_preprocessor'] = preprocessor
    model.pop('train_cfg', None)
    for head, injected in INJECTED_HEAD_ARGS.items():
        if isinstance(model.get(head), dict):
            model[head] = {k: v for k, v in model[head].items() if k not in injected}
    model['backbone'] = without_pretrained(model['backbone'])
    pipeline = cfg.test_dataloader.dataset.pipeline
    config = to_json_data(dict(default_scope=scope, model=model,
                               test_dataloader=dict(dataset=dict(pipeline=copy.deepcopy(list(pipeline))))))
    try:
        check_package_config(json.loads(json.dumps(config), object_hook=from_json_object))
    except SchemaError as e:
        raise ValueError(f'{cfg.filename or "the config"}: cannot be exported as a task package: {e}. The package '
                         'schema lists what a package may hold (docs/security.md); register a module type of your '
                         'own with petah_mm.deploy.package_schema.register_package_type before exporting and '
                         'loading') from e
    return config


def to_json_data(node, key='config'):
    """A config as JSON data; tuples (image scales) are kept as ``{"__tuple__": [...]}``."""
    if isinstance(node, dict):
        if not all(isinstance(k, str) for k in node):
            raise TypeError(f'{key}: config keys must be strings to be stored as JSON')
        return {k: to_json_data(v, f'{key}.{k}') for k, v in node.items()}
    if isinstance(node, tuple):
        return {'__tuple__': [to_json_data(v, f'{key}[{i}]') for i, v in enumerate(node)]}
    if isinstance(node, list):
        return [to_json_data(v, f'{key}[{i}]') for i, v in enumerate(node)]
    if isinstance(node, float) and not math.isfinite(node):
        raise ValueError(f'{key}={node} cannot be stored in a task package: JSON numbers are finite, and reading '
                         'refuses non-finite ones (write a finite value, e.g. 1e8 for an unbounded range)')
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    raise TypeError(f'{key}: a {type(node).__name__} cannot be stored in a task package config (JSON data only); '
                    'write it as a registered type name instead')


def from_json_object(node: dict):
    return tuple(node['__tuple__']) if set(node) == {'__tuple__'} else node


def read_bounded_text(path: Path, limit: int, what: str) -> str:
    """A package's text file, refused unread past ``limit`` bytes (a 40 MB ``config.json`` is not parsed)."""
    with open(path, 'rb') as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise AdapterFileError(f'{path}: larger than {limit} bytes, the limit for a {what}; not a file petah_mm '
                               'wrote (export the package again)')
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as e:
        raise AdapterFileError(f'{path}: not UTF-8 text ({e.reason} at byte {e.start}); a {what} is JSON text') from e


def read_package_config(package: PathLike) -> tuple:
    """``(task id, Config)`` from a package's ``config.json``: bounded JSON, read against the package schema
    (:mod:`petah_mm.deploy.package_schema`) before mmengine sees it; a refusal names the file, the key and
    the rule."""
    path = Path(package) / CONFIG_FILE
    if not path.is_file():
        legacy = ' (it has a config.py: an older, code-executing package format; export it again)' if (
            Path(package) / 'config.py').exists() else ''
        raise AdapterFileError(f'{package}: no {CONFIG_FILE}, not a task package{legacy}')
    text = read_bounded_text(path, MAX_CONFIG_BYTES, 'package config')
    try:
        data = parse_json_data(text, str(path), object_hook=from_json_object)
    except json.JSONDecodeError as e:
        raise AdapterFileError(f'{path}: not valid JSON ({e}); a package config is JSON data, export the '
                               'package again') from e
    except DataError as e:
        raise AdapterFileError(f'{short_text(str(e), 600)}; export the package again') from e
    if not (isinstance(data, dict) and set(data) == {'task_id', 'config'} and isinstance(data['task_id'], str)
            and TASK_ID.fullmatch(data['task_id']) and isinstance(data['config'], dict)):
        shape = sorted(map(quote, data))[:8] if isinstance(data, dict) else type(data).__name__
        raise AdapterFileError(f'{path}: expected {{"task_id": <32 hex digits>, "config": {{...}}}}, got {shape}; '
                               'not a config petah_mm exported')
    try:
        check_package_config(data['config'])
    except SchemaError as e:
        raise AdapterFileError(f'{path}: {e}; a package config is data read against the package schema '
                               '(docs/security.md), and nothing of it was built') from e
    return data['task_id'], Config(data['config'])


def build_task_model(config: Union[Config, PathLike]) -> nn.Module:
    """Build a model in its library's scope, without loading any weights.

    ``config`` is a :class:`Config` or the path of a trusted ``.py`` config (a package's config is
    read with :func:`read_package_config` instead).
    """
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    model_cfg = dict(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # a top-level one (mmpretrain's configs), as mmengine's Runner does
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(model_cfg)
    model.cfg = cfg  # the libraries' inference APIs read the test pipeline from here
    return model.eval()


def build_trained_model(config: PathLike, checkpoint: PathLike) -> Tuple[Config, nn.Module, dict]:
    """``(config, model, checkpoint)`` of a trained model, for the export tools: every weight comes from
    ``checkpoint`` (strict), so the config's backbone is built without its pretrained weights, and
    without any download (:func:`petah_mm.models.without_pretrained`)."""
    cfg = Config.fromfile(config)
    cfg.model.backbone = without_pretrained(cfg.model.backbone)
    model = build_task_model(cfg)
    return cfg, model, load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)


@torch.no_grad()
def load_shared_backbone(model: nn.Module, shared: Union[PathLike, Dict[str, torch.Tensor]]) -> None:
    from_file = isinstance(shared, (str, Path))
    state = read_tensor_file(shared, kind='backbone')[0] if from_file else shared
    check_tensors(shared if from_file else 'the shared backbone weights', state, model.backbone.shared_state_dict())
    model.backbone.load_state_dict(state, strict=False)


@torch.no_grad()
def load_task_package(package: PathLike, shared: Union[PathLike, Dict[str, torch.Tensor]]) -> nn.Module:
    """A task model from its package and the shared backbone weights, ready for inference."""
    package = Path(package)
    task_id, cfg = read_package_config(package)
    tensors, meta = read_tensor_file(package / 'task.safetensors', kind='task')
    check_task_id(package / 'task.safetensors', meta, task_id)
    model = build_task_model(cfg)
    load_shared_backbone(model, shared)
    model.backbone.load_adapter(package / 'adapter.safetensors', task_id=task_id)
    own = task_state(model)
    check_tensors(package / 'task.safetensors', tensors, own)
    for name, tensor in tensors.items():
        own[name].copy_(tensor)
    model.dataset_meta = restore_tuples(meta.get('dataset_meta'))
    model.package = package
    probe_task(model)
    return model


class NonFiniteOutputError(RuntimeError):
    """A task gave NaN or Inf: an error, never a score."""


def non_finite(output, where: str = 'output') -> Optional[str]:
    """Where ``output`` (tensors in tuples, lists, dicts or data samples) holds NaN or Inf first, or None."""
    if isinstance(output, BaseDataElement):
        output = dict(output.all_items())
    if isinstance(output, torch.Tensor):
        bad = output.is_floating_point() and not bool(torch.isfinite(output).all())
        return f'{where} (shape {tuple(output.shape)})' if bad else None
    if isinstance(output, dict):
        items = output.items()
    elif isinstance(output, (list, tuple)):
        items = enumerate(output)
    else:
        return None
    return next((found for key, value in items if (found := non_finite(value, f'{where}[{key!r}]'))), None)


def check_finite(output, model: nn.Module) -> None:
    """Raise :class:`NonFiniteOutputError`, naming the package and the mode, if ``output`` holds NaN or Inf."""
    where = non_finite(output)
    if where is not None:
        mode = 'merged' if getattr(model.backbone, 'is_merged', False) else 'routing'
        raise NonFiniteOutputError(f'{getattr(model, "package", "the task")}: {where} holds NaN or Inf in {mode} '
                                   'mode; a task never serves a non-finite score (its adapter or head weights are '
                                   'out of range: export the package again from a healthy checkpoint)')


@torch.no_grad()
def probe_task(model: nn.Module) -> None:
    """Refuse, naming the package, a task whose outputs on a probe image are not finite with its adapters
    unmerged (routing) or merged: finite tensors can still overflow (adapter factors of 1e15 whose merged
    kernels are finite, a head weight of 3e38). The probe is a seeded noise image through the task's own test
    pipeline, data preprocessor, raw forward and prediction."""
    image = np.random.default_rng(0).integers(0, 256, (*PROBE_SIZE, 3), dtype=np.uint8)
    with DefaultScope.overwrite_default_scope(model.cfg.default_scope), few_proposals(model):
        batch = model.data_preprocessor(pseudo_collate([ImagePipeline(model.cfg).from_array(image)]), False)
        for mode in ('routing', 'merged'):
            if mode == 'merged':
                model.backbone.merge_adapters()
            try:
                check_finite(model(batch['inputs'], batch['data_samples'], mode='tensor'), model)
                check_finite(model(batch['inputs'], batch['data_samples'], mode='predict'), model)
            finally:
                if mode == 'merged':
                    model.backbone.unmerge_adapters()


@contextmanager
def few_proposals(model: nn.Module):
    """A two-stage detector's raw forward (``mode='tensor'``) runs every RoI head, masks included, on all of
    the RPN's proposals (1,000: a minute on 2 CPU cores), and its prediction runs the mask heads on up to the
    RoI head's 100 boxes (seconds); the probe checks the same layers on :data:`PROBE_PROPOSALS` of each."""
    cfgs = [getattr(getattr(model, head, None), 'test_cfg', None) for head in ('rpn_head', 'roi_head')]
    cfgs = [cfg for cfg in cfgs if cfg is not None and 'max_per_img' in cfg]
    kept = [cfg.max_per_img for cfg in cfgs]
    for cfg in cfgs:
        cfg.max_per_img = min(cfg.max_per_img, PROBE_PROPOSALS)
    try:
        yield
    finally:
        for cfg, count in zip(cfgs, kept):
            cfg.max_per_img = count


def restore_tuples(value):
    """JSON turned the dataset meta's tuples (palette colours) into lists; visualizers want tuples."""
    if isinstance(value, dict):
        return {k: restore_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tuple(v) if isinstance(v, list) else restore_tuples(v) for v in value]
    return value
