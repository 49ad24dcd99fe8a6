"""The one container of petah_mm's shared files: adapters, task tensors, shared backbones, sparse packs.

A petah_mm tensor file is a safetensors file (tensors and strings only, so reading never
unpickles) whose string metadata holds
    * ``format`` (``petah_mm.<kind>``) and ``format_version``;
    * ``sha256``: the digest of every tensor's name, dtype, shape and bytes, so a flipped byte
      anywhere in the data is refused, not just a broken header;
    * every other metadata entry as JSON.
Reading checks all of these, and for the kinds that hold weights refuses non-finite values,
naming the file and the tensor, before the caller sees any tensor.
"""
import hashlib
import json
from pathlib import Path
from typing import Dict, Iterable, Mapping, Tuple, Union

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ..compat import short_repr, short_text
from .fileio import write_bytes_atomic
from .json_data import DataError, parse_json_data

FORMAT_VERSION = '2'  # 2: sha256 of the tensor bytes in every file
#: kind -> whether its floating-point tensors must be finite (a sparse pack stores any checkpoint bit for bit)
KINDS = {'adapter': True, 'task': True, 'backbone': True, 'sparse': False}
RESERVED_KEYS = ('format', 'format_version', 'sha256')
Tensors = Dict[str, torch.Tensor]


class TensorFileError(ValueError):
    """A petah_mm tensor file that cannot be used, with the file and the reason."""


def tensor_digest(tensors: Iterable[Tuple[str, torch.Tensor]]) -> str:
    """sha256 over names, dtypes, shapes and bytes, independent of the order of the tensors."""
    digest = hashlib.sha256()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        flat = tensor.detach().to('cpu').contiguous().reshape(-1)
        digest.update(f'{name}|{flat.dtype}|{tuple(tensor.shape)}|'.encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_tensor_file(path: Union[str, Path], tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, object],
                      kind: str, force: bool = False) -> int:
    """Write atomically (refusing to replace a file unless ``force``); returns the file size in bytes."""
    if kind not in KINDS:
        raise ValueError(f'unknown tensor file kind {kind!r}; choose one of {sorted(KINDS)}')
    clash = sorted(set(metadata) & set(RESERVED_KEYS))
    if clash:
        raise ValueError(f'metadata keys {clash} are reserved by the tensor file container')
    header = {}
    for key, value in metadata.items():
        try:
            header[key] = json.dumps(value)
        except TypeError as e:
            raise ValueError(f'{path}: metadata {key!r} is not JSON-serializable ({e}); a tensor file stores '
                             'only tensors and JSON metadata') from e
    stored = {k: v.detach().to('cpu').contiguous() for k, v in tensors.items()}
    header.update(format=f'petah_mm.{kind}', format_version=FORMAT_VERSION, sha256=tensor_digest(stored.items()))
    return write_bytes_atomic(path, save_safetensors_bytes(stored, metadata=header), force)


def read_tensor_file(path: Union[str, Path], kind: str) -> Tuple[Tensors, Dict[str, object]]:
    """Tensors and metadata of a petah_mm file of ``kind``, or :class:`TensorFileError` saying what is wrong."""
    path, expected = Path(path), f'petah_mm.{kind}'
    if not path.is_file():
        raise TensorFileError(f'{kind} file {str(path)!r} does not exist')
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], 'little')
        raw_meta = parse_json_data(data[8:8 + header_len].decode(), 'header').get('__metadata__') or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise TensorFileError(f'{path}: not a readable safetensors file ({short_text(str(e))}); the file is truncated '
                              f'or corrupt, write the {kind} file again') from e
    if raw_meta.get('format') != expected:
        raise TensorFileError(f'{path}: not a petah_mm {kind} file (metadata format='
                              f'{short_repr(raw_meta.get("format"), 100)}, expected {expected!r})')
    if raw_meta.get('format_version') != FORMAT_VERSION:
        raise TensorFileError(f'{path}: {kind} format version {short_repr(raw_meta.get("format_version"), 100)} is '
                              f'not supported by this petah_mm (it reads version {FORMAT_VERSION}); write the '
                              f'{kind} file again with this petah_mm')
    if raw_meta.get('sha256') != tensor_digest(tensors.items()):
        raise TensorFileError(f'{path}: sha256 mismatch, the tensor data is corrupt (the file was changed after '
                              f'it was written); write the {kind} file again')
    meta = {}
    for key, value in raw_meta.items():
        if key in RESERVED_KEYS:
            continue
        try:  # non-finite numbers only where the tensors may hold them too (a sparse pack of any checkpoint)
            meta[key] = parse_json_data(value, f'{path}: metadata {short_repr(key, 100)}', finite=KINDS[kind])
        except json.JSONDecodeError as e:
            raise TensorFileError(f'{path}: metadata {short_repr(key, 100)} is not valid JSON ({e}): '
                                  f'{short_repr(value, 80)}') from e
        except DataError as e:
            raise TensorFileError(str(e)) from e
    if KINDS[kind]:
        check_finite(path, tensors)
    return tensors, meta


def check_finite(path, tensors: Mapping[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TensorFileError(f'{path}: tensor {short_repr(name, 100)} holds NaN or Inf values; the run that '
                                  'wrote it diverged, so it is refused')
