"""Checkpoints of a sparse backbone: the dense ``.pth`` mmengine loads, and a compact safetensors form.

Compact format: a petah_mm tensor file of kind ``sparse`` (:mod:`petah_mm.utils.tensor_file`: safetensors,
format and version checks, sha256 of the tensor bytes) with
    * ``dense/<name>``: a tensor stored as is;
    * ``values/<name>`` + ``mask/<name>``: a tensor stored as its non-zero entries in row-major
      order plus ``numpy.packbits`` of its non-zero pattern (1 bit per entry, zero padding);
and metadata ``tensors`` (name -> ``null`` for dense or ``{"shape", "dtype"}`` for packed, in
state-dict order) and ``meta`` (the checkpoint's meta).

A tensor is packed when that is smaller: ``nnz * itemsize + ceil(n / 8) < n * itemsize``, i.e. below
~97% density for float32 (a 90%-sparse float32 weight takes 13% of its dense size). "Non-zero" is
decided on the bit pattern, so -0.0 and NaN payloads are kept as values and unpacking is bit for bit
lossless. Reading never unpickles: safetensors holds only tensors and strings.
"""
import math
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ..engine.checkpoint import load_checkpoint_file
from ..utils import save_torch_atomic
from ..utils.tensor_file import TensorFileError, read_tensor_file, write_tensor_file

#: dtypes that can be packed, by the name the file records
DTYPES = {str(d).removeprefix('torch.'): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64,
                                                     torch.uint8, torch.int8, torch.int16, torch.int32,
                                                     torch.int64, torch.bool)}
#: integer dtype of each item size, to read a tensor's bit patterns
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}

StateDict = Dict[str, torch.Tensor]


#: the container's error: one error class for every petah_mm tensor file
SparseFileError = TensorFileError


def write_checkpoint(path: Union[str, Path], state_dict: Mapping[str, torch.Tensor], meta: dict,
                     force: bool = False) -> int:
    """``{'state_dict', 'meta'}`` as an mmengine-loadable ``.pth``, written atomically; returns its size."""
    return save_torch_atomic(dict(state_dict=dict(state_dict), meta=meta), path, force)


def read_checkpoint(path: Union[str, Path]) -> Tuple[StateDict, dict, list]:
    """State dict, meta and the names of other top-level entries (optimizer, ...) of a ``.pth``.

    Loaded by petah_mm's one checkpoint loader (``weights_only=True``): no arbitrary code.
    """
    raw = load_checkpoint_file(path, map_location='cpu')
    if not isinstance(raw, dict):
        raise ValueError(f'{path}: expected a dict checkpoint, got {type(raw).__name__}')
    key = next((k for k in ('state_dict', 'model') if k in raw), None)
    state = raw if key is None else raw[key]
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f'{path}: {"top level" if key is None else repr(key)} holds non-tensor entries '
                         f'{not_tensors[:5]}; expected a state dict under "state_dict" or "model"')
    if key is None:
        return dict(state), {}, []
    return dict(state), dict(raw.get('meta') or {}), sorted(k for k in raw if k not in (key, 'meta'))


def _nonzero(flat: torch.Tensor) -> torch.Tensor:
    """Entries whose bit pattern is not all zeros (so -0.0 counts as a value)."""
    return flat.view(_BITS[flat.element_size()]) != 0


def _packs_smaller(tensor: torch.Tensor, nnz: int) -> bool:
    n, itemsize = tensor.numel(), tensor.element_size()
    return nnz * itemsize + math.ceil(n / 8) < n * itemsize


def pack_state_dict(state_dict: Mapping[str, torch.Tensor]) -> Tuple[StateDict, Dict[str, Optional[dict]]]:
    """The tensors to store and the layout that :func:`unpack_state_dict` needs to rebuild ``state_dict``."""
    tensors, layout = {}, {}
    for name, tensor in state_dict.items():
        flat = tensor.detach().to('cpu').contiguous().reshape(-1)
        nonzero = _nonzero(flat) if tensor.dtype in DTYPES.values() else None
        if nonzero is None or not _packs_smaller(flat, int(nonzero.sum())):
            tensors[f'dense/{name}'] = flat.reshape(tensor.shape)
            layout[name] = None
            continue
        tensors[f'values/{name}'] = flat[nonzero]
        tensors[f'mask/{name}'] = torch.from_numpy(np.packbits(nonzero.numpy()))
        layout[name] = dict(shape=list(tensor.shape), dtype=str(tensor.dtype).removeprefix('torch.'))
    return tensors, layout


def _unpack_one(name: str, entry: dict, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """One packed tensor back to dense; any inconsistency raises, naming the tensor."""
    shape_ok = isinstance(entry, dict) and isinstance(entry.get('shape'), list) and all(
        isinstance(size, int) and size >= 0 for size in entry['shape'])
    if not (shape_ok and entry.get('dtype') in DTYPES):
        raise SparseFileError(f'tensor {name!r}: bad layout entry {entry!r}')
    dtype, shape = DTYPES[entry['dtype']], entry['shape']
    numel = math.prod(shape)
    if mask.dtype != torch.uint8 or mask.shape != (math.ceil(numel / 8), ):
        raise SparseFileError(f'tensor {name!r}: mask is {mask.dtype} {tuple(mask.shape)}, expected uint8 '
                              f'({math.ceil(numel / 8)},) for shape {shape}')
    bits = np.unpackbits(mask.numpy())
    if bits[numel:].any() or values.dtype != dtype or values.shape != (int(bits.sum()), ):
        raise SparseFileError(f'tensor {name!r}: {values.dtype} values {tuple(values.shape)} do not fit the '
                              f'mask ({int(bits[:numel].sum())} set bits of {numel}, dtype {dtype})')
    dense = torch.zeros(numel, dtype=dtype)
    dense[torch.from_numpy(bits[:numel].astype(bool))] = values
    return dense.reshape(shape)


def unpack_state_dict(tensors: Mapping[str, torch.Tensor], layout: Mapping[str, Optional[dict]]) -> StateDict:
    """Inverse of :func:`pack_state_dict`, in the original key order."""
    expected = {f'dense/{n}' for n, e in layout.items() if e is None}
    expected |= {f'{kind}/{n}' for n, e in layout.items() if e is not None for kind in ('values', 'mask')}
    missing, extra = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    if missing or extra:
        raise SparseFileError(f'stored tensors do not match the layout: missing {missing[:5]}, '
                              f'unexpected {extra[:5]}')
    return {name: tensors[f'dense/{name}'] if entry is None else
            _unpack_one(name, entry, tensors[f'values/{name}'], tensors[f'mask/{name}'])
            for name, entry in layout.items()}


def write_packed(path: Union[str, Path], state_dict: Mapping[str, torch.Tensor], meta: Optional[dict] = None,
                 force: bool = False) -> int:
    """Write the compact form of ``state_dict`` atomically; returns the file size in bytes."""
    tensors, layout = pack_state_dict(state_dict)
    return write_tensor_file(path, tensors, dict(tensors=layout, meta=meta or {}), kind='sparse', force=force)


def read_packed(path: Union[str, Path]) -> Tuple[StateDict, dict]:
    """State dict and meta of a compact file, or :class:`SparseFileError` saying what is wrong."""
    tensors, header = read_tensor_file(path, kind='sparse')
    if not isinstance(header.get('tensors'), dict) or not isinstance(header.get('meta'), dict):
        raise SparseFileError(f'{path}: metadata "tensors" and "meta" must be JSON objects; pack it again from '
                              'the .pth')
    try:
        return unpack_state_dict(tensors, header['tensors']), header['meta']
    except SparseFileError as e:
        raise SparseFileError(f'{path}: {e}') from e
