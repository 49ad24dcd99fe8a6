"""Adapter files: a task's backbone tensors as safetensors, checked before anything is applied.

Adapters are shared between people, so they are data, never pickles. The file's metadata names
the method, the adapter configuration, the backbone architecture and a fingerprint of the frozen
weights the adapter was trained against; loading refuses any mismatch with a message that says
what differs, and only copies tensors into the model once every check has passed.
"""
import hashlib
import json
from pathlib import Path
from typing import Dict, Iterable, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ..utils import atomic_write

FORMAT_VERSION = '1'
#: what a petah_mm safetensors file holds: an adapter, a task's own tensors, or shared weights
KINDS = ('adapter', 'task', 'backbone')
#: metadata keys that must agree between a file and the model it is loaded into
CHECKED_KEYS = ('backbone', 'arch', 'method', 'adapters')


class AdapterFileError(ValueError):
    """An adapter file that cannot be applied to this model, with the reason."""


def fingerprint(tensors: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """sha256 over names, dtypes, shapes and bytes: the identity of a set of frozen weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        flat = tensor.detach().to('cpu').contiguous().reshape(-1)
        digest.update(f'{name}|{flat.dtype}|{tuple(tensor.shape)}|'.encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def write_tensor_file(path: Union[str, Path], tensors: Dict[str, torch.Tensor], metadata: Dict[str, object],
                      kind: str = 'adapter') -> int:
    """Write atomically; returns the file size in bytes."""
    assert kind in KINDS, kind
    header = {key: json.dumps(value) for key, value in metadata.items()}
    header.update(format=f'petah_mm.{kind}', format_version=FORMAT_VERSION)
    data = save_safetensors_bytes({k: v.detach().to('cpu').contiguous() for k, v in tensors.items()},
                                  metadata=header)
    with atomic_write(path) as f:
        f.write(data)
    return len(data)


def read_tensor_file(path: Union[str, Path], kind: str = 'adapter') -> Tuple[Dict[str, torch.Tensor], Dict[str, object]]:
    """Parse and validate the container; the content checks are :func:`check_adapter`'s job."""
    path, expected = Path(path), f'petah_mm.{kind}'
    if not path.is_file():
        raise AdapterFileError(f'{kind} file {str(path)!r} does not exist')
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], 'little')
        raw_meta = json.loads(data[8:8 + header_len]).get('__metadata__') or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise AdapterFileError(f'{path}: not a readable safetensors file ({e}); the file is truncated '
                               f'or corrupt, export the {kind} again') from e
    if raw_meta.get('format') != expected:
        raise AdapterFileError(f'{path}: not a petah_mm {kind} file (metadata format='
                               f'{raw_meta.get("format")!r}, expected {expected!r})')
    if raw_meta.get('format_version') != FORMAT_VERSION:
        raise AdapterFileError(f'{path}: {kind} format version {raw_meta.get("format_version")!r} is '
                               f'not supported by this petah_mm (reads version {FORMAT_VERSION})')
    meta = {key: json.loads(value) for key, value in raw_meta.items()
            if key not in ('format', 'format_version')}
    return tensors, meta


def check_adapter(path, tensors: Dict[str, torch.Tensor], meta: Dict[str, object],
                  expected_meta: Dict[str, object], own: Dict[str, torch.Tensor],
                  frozen_fingerprint: str) -> None:
    """Raise :class:`AdapterFileError` on the first mismatch between a file and the model."""
    for key in CHECKED_KEYS:
        if meta.get(key) != expected_meta[key]:
            raise AdapterFileError(f'{path}: {key} mismatch: the file has {meta.get(key)!r}, the model '
                                   f'has {expected_meta[key]!r}; build the model with the config the '
                                   'adapter was trained with')
    if meta.get('frozen_fingerprint') != frozen_fingerprint:
        raise AdapterFileError(f'{path}: the adapter was trained on different frozen weights (fingerprint '
                               f'{meta.get("frozen_fingerprint")}, this backbone has {frozen_fingerprint}); '
                               'load the same pretrained checkpoint before the adapter')
    check_tensors(path, tensors, own)


def check_tensors(path, tensors: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]) -> None:
    """Same names and shapes as the model's, or :class:`AdapterFileError` naming the difference."""
    missing, extra = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or extra:
        raise AdapterFileError(f'{path}: tensor names differ from the model: missing {missing[:5]}'
                               f'{"..." if len(missing) > 5 else ""}, unexpected {extra[:5]}'
                               f'{"..." if len(extra) > 5 else ""}')
    for name, tensor in tensors.items():
        if tensor.shape != own[name].shape:
            raise AdapterFileError(f'{path}: tensor {name!r} has shape {tuple(tensor.shape)}, the model '
                                   f'expects {tuple(own[name].shape)}')
