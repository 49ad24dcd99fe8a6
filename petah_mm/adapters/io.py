"""Adapter files: a task's backbone tensors in petah_mm's tensor file, checked before anything is applied.

Adapters are shared between people, so they are data, never pickles (see
:mod:`petah_mm.utils.tensor_file` for the container and its checksum). The file's metadata names
the method, the adapter configuration, the backbone architecture, a fingerprint of the frozen
weights the adapter was trained against and, inside a task package, the package's task id;
loading refuses any mismatch with a message that says what differs, and only copies tensors
into the model once every check has passed.
"""
from typing import Dict, Iterable, Optional, Tuple

import torch

from ..utils.tensor_file import TensorFileError, read_tensor_file, tensor_digest, write_tensor_file

#: the adapter error is the container's: one error class for every petah_mm tensor file
AdapterFileError = TensorFileError
#: metadata keys that must agree between a file and the model it is loaded into
CHECKED_KEYS = ('backbone', 'arch', 'method', 'adapters')
#: which layers a method adapts, as the file's ``layout`` records it. 1 (files without the key): TF "same"
#: padding convolutions (timm's ``Conv2dSame``, mmcv's ``Conv2dAdaptivePadding``) were left frozen, as
#: petah_mm could not adapt them; 2: they are adapted like any convolution of their target group
ADAPTER_LAYOUT = 2

__all__ = ['ADAPTER_LAYOUT', 'AdapterFileError', 'check_adapter', 'check_task_id', 'check_tensors', 'file_layout',
           'fingerprint', 'read_tensor_file', 'write_tensor_file']


def fingerprint(tensors: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """The identity of a set of frozen weights: the first 16 hex digits of their sha256."""
    return tensor_digest(tensors)[:16]


def check_adapter(path, tensors: Dict[str, torch.Tensor], meta: Dict[str, object],
                  expected_meta: Dict[str, object], own: Dict[str, torch.Tensor],
                  frozen_fingerprint: str) -> None:
    """Raise :class:`AdapterFileError` on the first mismatch between a file and the model."""
    for key in CHECKED_KEYS:
        if meta.get(key) != expected_meta[key]:
            raise AdapterFileError(f'{path}: {key} mismatch{differing_settings(meta.get(key), expected_meta[key])}: '
                                   f'the file has {meta.get(key)!r}, the model has {expected_meta[key]!r}; build '
                                   'the model with the config the adapter was trained with')
    if meta.get('frozen_fingerprint') != frozen_fingerprint:
        raise AdapterFileError(f'{path}: the adapter was trained on different frozen weights (fingerprint '
                               f'{meta.get("frozen_fingerprint")}, this backbone has {frozen_fingerprint}); '
                               'load the same pretrained checkpoint before the adapter')
    check_tensors(path, tensors, own)


def differing_settings(found, expected) -> str:
    """`` (attn.factor: 4 in the file, -1 in the model)`` for two ``adapters`` records, else ''; per-layer ranks
    name the layers that differ (`` (conv.layer_ranks['stem.conv']: 3 in the file, 2 in the model)``)."""
    if not (isinstance(found, dict) and isinstance(expected, dict)):
        return ''
    diffs = []
    for group, cfg in expected.items():
        if not isinstance(cfg, dict):
            continue
        own = found.get(group) if isinstance(found.get(group), dict) else {}
        for key in [*cfg, *(k for k in own if k not in cfg)]:
            if own.get(key) == cfg.get(key):
                continue
            if key == 'layer_ranks' and isinstance(own.get(key), dict) and isinstance(cfg.get(key), dict):
                diffs += layer_rank_diffs(group, own[key], cfg[key])
            else:
                diffs.append(f'{group}.{key}: {own.get(key)!r} in the file, {cfg.get(key)!r} in the model')
    return f' ({"; ".join(diffs)})' if diffs else ''


def layer_rank_diffs(group: str, found: dict, expected: dict, shown: int = 3) -> list:
    """The first ``shown`` layers whose rank differs (absent: None), and how many more do."""
    names = [*expected, *(name for name in found if name not in expected)]
    diffs = [f'{group}.layer_ranks[{name!r}]: {found.get(name)!r} in the file, {expected.get(name)!r} in the model'
             for name in names if found.get(name) != expected.get(name)]
    return diffs[:shown] + ([f'{len(diffs) - shown} more layers of {group} differ'] if len(diffs) > shown else [])


def file_layout(path, meta: Dict[str, object]) -> int:
    """The file's adapter layout (1 when it names none), or :class:`AdapterFileError` for one this petah_mm
    does not know."""
    layout = meta.get('layout', 1)
    if type(layout) is not int or not 1 <= layout <= ADAPTER_LAYOUT:
        raise AdapterFileError(f'{path}: adapter layout {layout!r} is not one this petah_mm reads (1 to '
                               f'{ADAPTER_LAYOUT}); the file was written by a newer petah_mm, upgrade it')
    return layout


def check_task_id(path, meta: Dict[str, object], task_id: Optional[str]) -> None:
    """Inside a package every file names the package's task: a file copied from another package is refused."""
    if task_id is not None and meta.get('task_id') != task_id:
        raise AdapterFileError(f'{path}: belongs to task {meta.get("task_id")!r}, but this package is task '
                               f'{task_id!r}; a file was copied from another package, export the package again')


def check_tensors(path, tensors: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]) -> None:
    """Same names, shapes and dtypes as the model's, or :class:`AdapterFileError` naming the difference."""
    missing, extra = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or extra:
        raise AdapterFileError(f'{path}: tensor names differ from the model: missing {missing[:5]}'
                               f'{"..." if len(missing) > 5 else ""}, unexpected {extra[:5]}'
                               f'{"..." if len(extra) > 5 else ""}')
    for name, tensor in tensors.items():
        if tensor.shape != own[name].shape:
            raise AdapterFileError(f'{path}: tensor {name!r} has shape {tuple(tensor.shape)}, the model '
                                   f'expects {tuple(own[name].shape)}')
        if tensor.dtype != own[name].dtype:
            raise AdapterFileError(f'{path}: tensor {name!r} is {tensor.dtype}, the model holds '
                                   f'{own[name].dtype}; it is refused rather than cast silently')
