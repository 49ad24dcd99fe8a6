"""Task packages: what one task adds to a shared backbone, and the shared backbone itself.

A package is a directory with three files:

* ``adapter.safetensors``: the backbone's task tensors (adapter factors, or the weights the
  method trains), checked against the shared weights' fingerprint when loaded;
* ``task.safetensors``: everything else the task owns (neck, heads, the backbone's output
  norms);
* ``config.json``: the task's config as JSON data, whose backbone loads no weights itself (no
  ``init_cfg``, no ``pretrained`` download: :func:`petah_mm.models.without_pretrained`).

The shared backbone is one ``backbone.safetensors`` for all tasks. A package is pure data:
nothing is unpickled, and the config is parsed with ``json``, never executed like a ``.py``
config. Before mmengine sees the config, every name in it that mmengine would import or resolve
(``type``, ``_scope_``, ``default_scope``, ``custom_imports``, ``_base_``, ``scope::`` strings) must be
a registered module or a library's scope (:func:`check_config_names`); mmengine would otherwise
import any dotted path, e.g. ``os.system``, or ``<scope>.registry``. Each file records the package's
random task id, so a file copied in from another package is refused.
"""
import json
import math
import shutil
import tempfile
import uuid
from importlib import import_module
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import mmengine.registry
import torch
from mmengine.config import Config
from mmengine.config.config import RESERVED_KEYS as CONFIG_RESERVED_KEYS
from mmengine.registry import MODELS, DefaultScope, Registry
from mmengine.runner import load_checkpoint
from torch import nn

from ..adapters.io import (AdapterFileError, check_task_id, check_tensors, fingerprint, read_tensor_file,
                           write_tensor_file)
from ..models import without_pretrained
from ..utils import atomic_write
from ..utils.fileio import default_mode, publish_directory
from ..utils.json_data import DataError, parse_json_data

CONFIG_FILE = 'config.json'
#: the libraries a task package may come from (its ``default_scope``), and the only scopes (``_scope_``, scope
#: prefixes) it may name: the only ``<scope>.registry`` modules reading a package imports
LIBRARY_SCOPES = ('mmengine', 'mmdet', 'mmseg', 'mmpretrain')
#: the modules a package's ``custom_imports`` may name: petah_mm itself, which is reading it
TRUSTED_IMPORTS = ('petah_mm', )
#: ``type`` values the libraries read without a registry: mmdet's ``getattr(mmcv.ops, type)`` RoI layers, and
#: mmcv's ``batched_nms``, which ``eval``s its type, so only these exact strings are accepted
NON_REGISTRY_TYPES = ('nms', 'soft_nms', 'RoIAlign', 'RoIPool')

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
    """
    out_dir = Path(out_dir)
    if out_dir.exists():  # early, before the work; publishing refuses it again
        raise FileExistsError(f'{out_dir} exists; remove it or choose another package directory')
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f'.{out_dir.name}.'))
    task_id = uuid.uuid4().hex
    try:
        sizes = dict(adapter=model.backbone.save_adapter(staging / 'adapter.safetensors', task_id=task_id),
                     task=write_tensor_file(staging / 'task.safetensors', task_state(model),
                                            dict(default_scope=cfg.default_scope, dataset_meta=dataset_meta,
                                                 task_id=task_id), kind='task'))
        task_cfg = cfg.to_dict()
        task_cfg['model']['backbone'] = without_pretrained(task_cfg['model']['backbone'])
        task_cfg['load_from'] = None
        with atomic_write(staging / CONFIG_FILE, 'w') as f:
            f.write(json.dumps(dict(task_id=task_id, config=to_json_data(task_cfg)), indent=1))
        sizes['config'] = (staging / CONFIG_FILE).stat().st_size
        staging.chmod(default_mode(directory=True))
        publish_directory(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sizes


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


def read_package_config(package: PathLike) -> tuple:
    """``(task id, Config)`` from a package's ``config.json``; parsing JSON never runs code, and every name
    that would make mmengine import or resolve something is checked before mmengine sees the config."""
    path = Path(package) / CONFIG_FILE
    if not path.is_file():
        legacy = ' (it has a config.py: an older, code-executing package format; export it again)' if (
            Path(package) / 'config.py').exists() else ''
        raise AdapterFileError(f'{package}: no {CONFIG_FILE}, not a task package{legacy}')
    try:
        data = parse_json_data(path.read_text(), str(path), object_hook=from_json_object)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AdapterFileError(f'{path}: not valid JSON ({e}); a package config is JSON data, export the '
                               'package again') from e
    except DataError as e:
        raise AdapterFileError(f'{e}; export the package again') from e
    if not (isinstance(data, dict) and isinstance(data.get('task_id'), str) and isinstance(data.get('config'), dict)):
        raise AdapterFileError(f'{path}: expected {{"task_id": str, "config": {{...}}}}, got '
                               f'{type(data).__name__} with keys {sorted(data) if isinstance(data, dict) else []}')
    check_config_names(data['config'], path)
    return data['task_id'], Config(data['config'])


def check_config_names(config: dict, path) -> None:
    """Refuse, naming the key, every value that would make mmengine import or resolve a name the package chose.

    mmengine imports ``<scope>.registry`` for ``_scope_``, ``default_scope`` and a ``type``'s scope
    prefix (``mmdet.Foo``), imports any dotted ``type`` it does not find in a registry, imports
    ``custom_imports``, reads the files ``_base_`` names and resolves ``scope::path`` strings through
    the scope's package. So scopes must be :data:`LIBRARY_SCOPES`, types registered
    (:func:`check_registered_types`), imports :data:`TRUSTED_IMPORTS`, and ``_base_`` is refused: an
    exported config is already complete.
    """
    reserved = sorted(set(config) & set(CONFIG_RESERVED_KEYS))
    if reserved:
        raise AdapterFileError(f'{path}: config keys {reserved} are reserved by mmengine\'s Config; not a config '
                               'petah_mm exported')
    if config.get('default_scope') not in LIBRARY_SCOPES[1:]:
        raise AdapterFileError(f'{path}: config.default_scope={config.get("default_scope")!r}; a task package '
                               f'belongs to one of {LIBRARY_SCOPES[1:]}')
    check_registered_types(config, path, config['default_scope'])


def refuse(path, key: str, value, reason: str):
    raise AdapterFileError(f'{path}: {key}={value!r} {reason}; a task package is data and may not name code')


def check_registered_types(node, path, scope, key='config') -> None:
    """Every ``type`` in the config names a module registered where it is built (the innermost ``_scope_``, else
    the package's scope), every scope is a library's, and nothing names another module; else refused."""
    if isinstance(node, str):
        prefix = node.partition('::')[0]
        if '::' in node and prefix not in LIBRARY_SCOPES:
            refuse(path, key, node, f'names the scope {prefix!r}, and mmengine resolves "scope::..." by importing '
                   f'that package; only {LIBRARY_SCOPES} may be named')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            check_registered_types(value, path, scope, f'{key}[{i}]')
    elif isinstance(node, dict):
        if '_base_' in node:
            refuse(path, f'{key}._base_', node['_base_'], 'makes mmengine read another config; an exported '
                   'package config is complete and never inherits')
        if 'custom_imports' in node and not is_trusted_import(node['custom_imports']):
            refuse(path, f'{key}.custom_imports', node['custom_imports'], 'makes mmengine import modules '
                   f'(running their code); a package may only name {TRUSTED_IMPORTS}')
        for name in ('_scope_', 'default_scope'):
            if name in node and node[name] not in LIBRARY_SCOPES:
                refuse(path, f'{key}.{name}', node[name], f'makes mmengine import "<scope>.registry"; a scope '
                       f'must be one of {LIBRARY_SCOPES}')
        scope = node.get('_scope_', scope)
        if 'type' in node:
            name = node['type']
            if not (name in NON_REGISTRY_TYPES or isinstance(name, str) and is_registered(name, scope)):
                refuse(path, f'{key}.type', name, f'is not a registered module name in scope {scope!r} (mmengine '
                       'would import an unknown name)')
        for k, value in node.items():
            check_registered_types(value, path, scope, f'{key}.{k}')


def is_trusted_import(custom_imports) -> bool:
    """``custom_imports`` as petah_mm's configs write it: ``dict(imports=[...], allow_failed_imports=...)``,
    importing only :data:`TRUSTED_IMPORTS` (already imported by whoever reads the package)."""
    return (isinstance(custom_imports, dict) and set(custom_imports) <= {'imports', 'allow_failed_imports'}
            and isinstance(custom_imports.get('imports'), list)
            and all(name in TRUSTED_IMPORTS for name in custom_imports['imports']))


def library_registry_module(scope: str):
    """The registry module of one of :data:`LIBRARY_SCOPES`, the only modules a check imports by scope name."""
    if scope not in LIBRARY_SCOPES:
        raise ValueError(f'scope {scope!r} is not one of {LIBRARY_SCOPES}; no other registry is imported')
    return import_module(f'{scope}.registry')  # creates the library's child registries


def is_registered(name: str, scope: str) -> bool:
    """Whether a build in ``scope`` finds ``name`` in a registry, importing nothing named by the package.

    mmengine's ``Registry.get`` imports ``<prefix>.registry`` for a scope prefix
    (``mmpretrain.EfficientFormer``), and any name it cannot find. So a name may have one prefix, a
    library's, and is looked up by get()'s search (:func:`find_registered`) in the registries' own
    tables: no import but the libraries' registries, and no change to mmengine's state (checks may
    run in several threads at once).
    """
    library_registry_module(scope)
    prefix, real_name = Registry.split_scope_key(name)
    if prefix is not None:
        if prefix not in LIBRARY_SCOPES or '.' in real_name:  # get() would import a second prefix's registry
            return False
        library_registry_module(prefix)
    for root in (r for r in vars(mmengine.registry).values() if isinstance(r, Registry)):
        registry = root._search_child(scope)  # the registry a build in scope uses (not `or`: an empty one is falsy)
        if find_registered(root if registry is None else registry, name):
            return True
    return False


def find_registered(registry: Registry, key: str) -> bool:
    """``Registry.get(key) is not None`` (mmengine 0.10) minus its fallback imports: the registry, then its
    ancestors, for a plain name; the scope's registry for a scope prefix."""
    registry.import_from_location()  # the library's own module list, as get() does
    scope, real_key = Registry.split_scope_key(key)
    if scope is None or scope == registry.scope:
        if real_key in registry._module_dict:
            return True
        parent = registry.parent if scope is None else None
        while parent is not None:
            if real_key in parent._module_dict:
                return True
            parent = parent.parent
        return False
    if scope in registry._children:
        return find_registered(registry._children[scope], real_key)
    root = registry._get_root_registry()
    return (scope == root.scope or scope in root._children) and find_registered(root, key)


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
    return model


def restore_tuples(value):
    """JSON turned the dataset meta's tuples (palette colours) into lists; visualizers want tuples."""
    if isinstance(value, dict):
        return {k: restore_tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tuple(v) if isinstance(v, list) else restore_tuples(v) for v in value]
    return value
