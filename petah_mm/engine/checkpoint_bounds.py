"""What a checkpoint file must be before it is unpickled, and what its content may cost once it is.

A ``.pth`` of N bytes must not make petah_mm allocate much more than N. Before loading, the file
must be torch's zip format with every entry stored uncompressed (so the storages torch reads
are at most N bytes; the pre-1.6 format allocates the sizes its pickle declares before reading
them). After loading, every tensor must be a view that fits in its storage without repeating an
element (``torch.zeros(1).expand(2**42)`` pickles to 1.6 KB but copies to 17.6 TB), and all
tensors and numpy arrays together may hold at most ``EXPANSION * N + SLACK_BYTES`` bytes. A
safetensors file (which ``torch.load`` of torch >= 2.9 also reads) is refused with the way to
read it, so it never skips petah_mm's tensor-file checks.

Each check returns the problem as text (``None``: none); the loader adds the file name.
"""
import os
import re
import zipfile
from typing import Optional

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

#: the content of a checkpoint may hold this many times its file size in tensors and arrays, plus SLACK_BYTES
EXPANSION = 4
SLACK_BYTES = 1 << 20
#: how deeply containers may nest in a checkpoint (an mmengine Runner checkpoint nests about 6 deep)
MAX_DEPTH = 64
#: places (container entries) a checkpoint may hold beyond one per byte of the file (each costs a byte or more,
#: unless a pickle shares a container between places)
SLACK_PLACES = 10_000
#: how to read each kind of petah_mm tensor file instead
TENSOR_FILE_READERS = {
    'adapter': "the adapted backbone's load_adapter() or a task package (docs/deployment.md)",
    'task': 'load_task_package() of its task package (docs/deployment.md)',
    'backbone': "multitask_demo.py --backbone or MultiTaskModel's shared backbone (docs/deployment.md)",
    'sparse': 'tools/model_converters/sparse_pack.py unpack, which writes it back as a .pth (docs/sparse.md)',
}


def file_problem(path: str) -> Optional[str]:
    """Why the file at ``path`` is not a torch zip checkpoint whose entries add up to at most its size."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(1 << 16)
    if head[:4] != b'PK\x03\x04':
        return not_zip_problem(head, size)
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        return f'it is not a readable zip archive ({e}); the file is truncated or corrupt'
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed:
        return (f'its zip entries {packed[:3]} are compressed; torch.save stores entries uncompressed, and '
                'a compressed entry could expand far beyond the file size')
    total = sum(e.file_size for e in entries)
    if total > size:
        return f'its zip entries claim {total} bytes, more than the file holds ({size})'
    return None


def not_zip_problem(head: bytes, size: int) -> str:
    """What a file that is not a zip archive is, and how to use it instead."""
    if not head:
        return 'the file is empty'
    if len(head) > 8 and head[8:9] == b'{' and int.from_bytes(head[:8], 'little') <= size - 8:
        kind = re.search(rb'"format"\s*:\s*"petah_mm\.(\w+)"', head)
        if kind and kind[1].decode() in TENSOR_FILE_READERS:
            return (f'it is a petah_mm {kind[1].decode()} file (safetensors), not a .pth checkpoint; read it with '
                    f'{TENSOR_FILE_READERS[kind[1].decode()]}')
        return ('it is a safetensors file, not a .pth checkpoint; petah_mm reads safetensors only as its own '
                'tensor files (adapters, tasks, backbones, sparse packs), each with its own checks')
    if head[:1] == b'\x80':
        return ("it is in torch's pre-1.6 (non-zip) format, which allocates the storage sizes its pickle declares "
                'before they can be checked; re-save it with torch.save of torch >= 1.6 in a separate process '
                'if you trust it')
    return f'it is not a torch checkpoint (a zip archive): it starts with {head[:16]!r}'


def tensor_problem(tensor: torch.Tensor) -> Optional[str]:
    """Why ``tensor`` could cost more than its storage when copied: an expanded or overlapping view."""
    if tensor.layout != torch.strided:
        return f'has layout {tensor.layout}; checkpoints petah_mm loads hold dense tensors only'
    if tensor.numel() == 0:
        return None
    capacity = tensor.untyped_storage().nbytes() // tensor.element_size()
    extent = 0  # how far the dims with smaller strides reach: a larger stride must step past it
    for stride, size in sorted((st, sz) for sz, st in zip(tensor.shape, tensor.stride()) if sz > 1):
        if stride <= extent:
            break
        extent += stride * (size - 1)
    else:
        if tensor.storage_offset() + extent < capacity:
            return None
    return (f'is a view of {tensor.numel()} elements (shape {tuple(tensor.shape)}, strides {tensor.stride()}) '
            f'over a storage of {capacity}: an expanded or overlapping view, whose copy would take '
            f'{tensor.numel() * tensor.element_size()} bytes')


def content_problem(obj, file_size: int) -> Optional[str]:
    """Why the loaded ``obj`` of a ``file_size``-byte file is not bounded: nesting, a view, or too many bytes.

    Everything is counted at every place it is held, as a tool that copies each entry would pay for it; a
    pickle can share one object between places for a few bytes each, so the places are bounded too.
    """
    budget, total = EXPANSION * file_size + SLACK_BYTES, 0
    places = file_size + SLACK_PLACES
    stack = [(obj, '', 0)]
    while stack:
        node, where, depth = stack.pop()
        places -= 1
        if places < 0:
            return (f'its containers hold more than {file_size + SLACK_PLACES} entries, counting an entry shared '
                    f'between containers at every place (at {where})')
        if isinstance(node, torch.Tensor):
            problem = tensor_problem(node)
            if problem:
                return f'tensor {where or "(top level)"} {problem}'
            total += node.numel() * node.element_size()
        elif isinstance(node, np.ndarray):
            total += node.nbytes
        if total > budget:
            return (f'its tensors and arrays up to {where or "(top level)"} hold {total} bytes, more than '
                    f'{EXPANSION} times its {file_size} bytes; a weights file holds its tensors\' bytes')
        children = container_items(node)
        if children is not None and depth >= MAX_DEPTH:
            return f'it nests containers more than {MAX_DEPTH} deep (at {where})'
        stack.extend((child, f'{where}[{key!r}]', depth + 1) for key, child in children or ())
    return None


def container_items(node):
    """(key, child) pairs of a container a checkpoint may hold, or None for a leaf."""
    if isinstance(node, dict):
        return [(f'<key {i}>', key) for i, key in enumerate(node) if not isinstance(key, (str, int))] + \
            list(node.items())
    if isinstance(node, (list, tuple, set, frozenset)):
        return list(enumerate(node))
    if isinstance(node, HistoryBuffer):
        return list(vars(node).items())
    if isinstance(node, np.ndarray) and node.dtype.hasobject:
        return list(enumerate(node.ravel().tolist()))
    return None
