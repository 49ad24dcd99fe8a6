"""What a checkpoint file must be before it is unpickled, and what its content may cost once it is.

A ``.pth`` of N bytes must not make petah_mm allocate much more than N. Before loading, the file
must be torch's zip format with every entry stored uncompressed (so the storages torch reads
are at most N bytes; the pre-1.6 format allocates the sizes its pickle declares before reading
them). After loading, every tensor must be a view that fits in its storage without repeating an
element (``torch.zeros(1).expand(2**42)`` pickles to 1.6 KB but copies to 17.6 TB), and all
tensors and numpy arrays together may hold at most ``EXPANSION * N + SLACK_BYTES`` bytes. A
safetensors file (which ``torch.load`` of torch >= 2.9 also reads) is refused with the way to
read it, so it never skips petah_mm's tensor-file checks.

Before torch reads anything, the archive's pickle (``data.pkl``) is followed opcode by opcode without
unpickling it (:class:`PickleScan`): it may use only the opcodes torch.save writes and call only what
torch.save, numpy and mmengine write, with the arguments they write. ``_codecs.encode`` (how protocol 2
stores bytes) takes only the ``latin1`` codec (``punycode`` costs time quadratic in its input),
``bytearray`` no size, and nothing copies a view or allocates a size the pickle declares; a callable that
is not a named global (torch's unpickler would print it, and a value that shares itself prints in
exponential time), a dict key whose hash visits too many values, and a storage whose entry does not hold
exactly the bytes it declares are refused. This check is the same on every torch version. The archive
may not hold two entries of one name (torch's reader ignores case and would read either), and the
pickle checked is the one torch's own zip reader returns.

Each check returns the problem as text (``None``: none); the loader adds the file name.
"""
import functools
import os
import pickletools
import re
import warnings
import zipfile
from collections import Counter
from typing import Optional

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from ..compat import global_name, short_repr, short_text

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

#: the pickle opcodes of torch.save's protocol 2, exactly those torch's weights-only unpickler reads; a checkpoint
#: with any other (protocol 4's FRAME, POP, STACK_GLOBAL ...) is refused before it is unpickled
PICKLE_OPS = frozenset((
    'PROTO', 'STOP', 'GLOBAL', 'REDUCE', 'NEWOBJ', 'BUILD', 'BINPERSID', 'MARK', 'TUPLE', 'TUPLE1', 'TUPLE2', 'TUPLE3',
    'EMPTY_TUPLE', 'EMPTY_LIST', 'EMPTY_DICT', 'EMPTY_SET', 'APPEND', 'APPENDS', 'SETITEM', 'SETITEMS', 'NONE',
    'NEWTRUE', 'NEWFALSE', 'BININT', 'BININT1', 'BININT2', 'LONG1', 'BINFLOAT', 'BINUNICODE', 'SHORT_BINSTRING',
    'BINGET', 'LONG_BINGET', 'BINPUT', 'LONG_BINPUT'))
#: the opcodes that push their argument: text, ints and floats
TEXT_AND_NUMBERS = frozenset(('BINUNICODE', 'BININT', 'BININT1', 'BININT2', 'LONG1', 'BINFLOAT'))
#: how many nodes hashing a dict key or set element may visit (a key shared with itself doubles per level)
MAX_KEY_NODES = 256
#: the functions that rebuild a dense tensor; ``_rebuild_from_type_v2`` may call only these
TENSOR_REBUILDS = frozenset(f'torch._utils.{name}' for name in (
    '_rebuild_tensor', '_rebuild_tensor_v2', '_rebuild_tensor_v3', '_rebuild_parameter',
    '_rebuild_parameter_with_state', '_rebuild_meta_tensor_no_storage'))
#: the numpy dtypes a checkpoint's arrays and scalars may have (``np.dtype('f8', False, True)`` in a pickle)
NUMPY_DTYPE = re.compile(r'[<>=|]?[biuf]\d{1,2}')
NUMPY_NAMES = ('numpy._core.multiarray', 'numpy.core.multiarray')
#: the classes a checkpoint's pickle may create with NEWOBJ, with no arguments (mmengine's message hub buffers)
NEW_OBJECTS = frozenset({'mmengine.logging.history_buffer.HistoryBuffer'})


def file_problem(path: str) -> Optional[str]:
    """Why the file at ``path`` is not a torch zip checkpoint whose entries add up to at most its size and whose
    pickle is what torch.save writes (:func:`pickle_problem`)."""
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
        head = f.read(1 << 16)
    if head[:4] != b'PK\x03\x04':
        return not_zip_problem(head, size)
    try:
        with zipfile.ZipFile(path) as archive:
            return archive_problem(archive, size, path)
    except (zipfile.BadZipFile, OSError) as e:
        return f'it is not a readable zip archive ({short_text(str(e))}); the file is truncated or corrupt'


def archive_problem(archive: zipfile.ZipFile, size: int, source) -> Optional[str]:
    """Why a checkpoint's zip archive is not one torch.save writes: compressed, duplicated, oversized, its pickle.

    torch's zip reader finds an entry by its name without regard to case, under the folder of the first entry;
    entries are looked up here the same way, and names that differ only in case are refused, since the two
    readers could then pick different entries. The pickle that is checked must be the one torch reads from
    ``source`` (the file's path, or a buffer of its bytes): the two zip readers differ on malformed archives
    (Python's accepts data before the archive, torch's does not).
    """
    entries = archive.infolist()
    twice = [name for name, count in Counter(e.filename.lower() for e in entries).items() if count > 1]
    if twice:
        return (f'its zip archive holds more than one entry named {short_repr(twice[0])} (names compared without '
                "case, as torch's zip reader does); torch.save writes each entry once, and readers may pick "
                'different ones')
    packed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if packed:
        return (f'its zip entries {short_repr(packed[:3])} are compressed; torch.save stores entries uncompressed, '
                'and a compressed entry could expand far beyond the file size')
    total = sum(e.file_size for e in entries)
    if total > size:
        return f'its zip entries claim {total} bytes, more than the file holds ({size})'
    folder = entries[0].filename.split('/')[0] + '/' if entries else ''
    records = {e.filename[len(folder):].lower(): e for e in entries if e.filename.lower().startswith(folder.lower())}
    if 'data.pkl' not in records:
        return f'its zip archive has no entry {short_repr(folder + "data.pkl")}; torch.save writes its pickle there'
    data = archive.read(records['data.pkl'])
    try:
        same = torch._C.PyTorchFileReader(source).get_record('data.pkl') == data
    except RuntimeError as e:
        return f"torch's zip reader cannot read its data.pkl ({short_text(str(e))}); the file is corrupt"
    if not same:
        return ("its data.pkl reads differently through Python's zip reader and torch's; torch.save writes an "
                'archive both read alike')
    return pickle_problem(data, records)


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


class Node:
    """A value on the scanned pickle's stack that is not a plain literal: a global, a tuple, a container, a storage
    or a call's result. ``nodes`` bounds how many nodes a hash of it visits, counting a shared value at every place.
    """
    __slots__ = ('kind', 'name', 'items', 'nodes', 'widest')

    def __init__(self, kind: str, name: str = '', items: tuple = (), nodes: int = 1):
        self.kind, self.name, self.items, self.nodes, self.widest = kind, name, items, nodes, 0


def nodes(value) -> int:
    return value.nodes if isinstance(value, Node) else 1


def tuple_node(items) -> Node:
    return Node('tuple', items=tuple(items), nodes=min(1 + sum(map(nodes, items)), MAX_KEY_NODES + 1))


def is_global(value, names=None) -> bool:
    return isinstance(value, Node) and value.kind == 'global' and (names is None or value.name in names)


def is_text(value) -> bool:
    return type(value) is str


def show(value) -> str:
    """A value of the pickle as a refusal quotes it: at most a few hundred characters."""
    if isinstance(value, Node) and value.kind == 'tuple':
        shown = [show(item) if not isinstance(item, Node) or item.kind != 'tuple' else '(...)'
                 for item in value.items[:6]]
        return f'({", ".join(shown)}{", ..." if len(value.items) > 6 else ""})'
    if isinstance(value, Node):
        return short_text(value.name, 100) if value.kind == 'global' else f'<{value.kind}>'
    return short_repr(value, 100)


def call_problem(name: str, args: Node) -> Optional[str]:
    """Why the pickle's call ``name(*args)`` is not one torch.save, numpy or mmengine writes (None: it is)."""
    a = args.items
    if name == '_codecs.encode':  # torch.save (protocol 2) writes bytes as _codecs.encode(text, 'latin1')
        if len(a) == 2 and is_text(a[0]) and a[1] == 'latin1' and is_text(a[1]):
            return None
        codec = a[1] if len(a) > 1 else '(none)'
        return (f"it calls _codecs.encode with the codec {show(codec)}; torch.save writes bytes only as "
                "_codecs.encode(text, 'latin1'), and other codecs can take time quadratic in their input "
                '(punycode: minutes for 60 KB)')
    if name == 'builtins.bytearray':  # pickle writes bytearray(_codecs.encode(text, 'latin1')), or bytearray()
        if not a or len(a) == 1 and isinstance(a[0], Node) and a[0].kind == 'call' and a[0].name == '_codecs.encode':
            return None
        return (f'it calls bytearray{show(args)}; pickle writes bytearray() or bytearray(bytes), and other arguments '
                'allocate the size they declare or decode with any codec')
    if name in ('torch._utils._rebuild_parameter_with_state', 'torch._tensor._rebuild_from_type_v2') and \
            len(a) == 4 and isinstance(a[3], Node) and a[3].kind == 'tuple' and len(a[3].items) != 2:
        return (f'it calls {name} with a state of {len(a[3].items)} values; torch writes a dict or a (dict, slots) '
                'pair, and prints any other state in full in its error (exponential time for a value shared with '
                'itself)')
    if name == 'torch._tensor._rebuild_from_type_v2':
        if len(a) == 4 and is_global(a[0], TENSOR_REBUILDS) and isinstance(a[2], Node) and a[2].kind == 'tuple':
            return call_problem(a[0].name, a[2])
        return (f'it calls torch._tensor._rebuild_from_type_v2 with {show(a[0] if a else None)}; torch.save writes '
                f'it only around a dense tensor rebuild ({", ".join(sorted(TENSOR_REBUILDS))})')
    if name in TENSOR_REBUILDS or name in ('torch.Size', 'torch.device', 'builtins.complex'):
        return None
    if name == 'numpy.dtype' and a and is_text(a[0]) and NUMPY_DTYPE.fullmatch(a[0]):
        return None
    if name in (f'{module}._reconstruct' for module in NUMPY_NAMES) and len(a) == 3 and \
            is_global(a[0], {'numpy.ndarray'}) and isinstance(a[1], Node) and a[1].items == (0,):
        return None  # numpy writes _reconstruct(ndarray, (0,), b'b'); its state holds the data
    if name in (f'{module}.scalar' for module in NUMPY_NAMES):
        return None
    if name == 'builtins.set' and (not a or len(a) == 1 and isinstance(a[0], Node) and a[0].kind == 'list'
                                   and a[0].widest <= MAX_KEY_NODES):
        return None
    if name in ('collections.OrderedDict', 'collections.Counter') and (
            not a or (name == 'collections.Counter' and len(a) == 1 and isinstance(a[0], Node)
                      and a[0].kind == 'dict')):
        return None
    return (f'its pickle calls {short_text(name, 100)}{show(args)}, which is not how torch.save, numpy or '
            'mmengine write a tensor, a plain container or training state: petah_mm reads every checkpoint as '
            'weights only (torch.load(weights_only=True)), calling only what they write, with the arguments they '
            'write, so that a shared file cannot run code or allocate or copy more than it holds')


@functools.lru_cache(maxsize=1)
def storage_sizes() -> dict:
    """The element size of each storage type name torch.save writes (``torch.FloatStorage`` ...)."""
    sizes = {'torch.storage.UntypedStorage': 1}
    with warnings.catch_warnings():  # the legacy storage classes warn that TypedStorage is deprecated
        warnings.simplefilter('ignore')
        for cls in torch._storage_classes:
            if cls not in (torch.storage.TypedStorage, torch.storage.UntypedStorage):
                sizes[f'{cls.__module__}.{cls.__name__}'] = torch._utils._element_size(cls.dtype)
    return sizes


def storage_problem(pid, records: dict) -> Optional[str]:
    """Why a persistent id of the pickle is not a storage whose record holds the bytes it declares."""
    a = pid.items if isinstance(pid, Node) and pid.kind == 'tuple' else ()
    if not (len(a) == 5 and a[0] == 'storage' and is_global(a[1]) and is_text(a[2]) and is_text(a[3])
            and type(a[4]) is int and a[4] >= 0):
        return (f"it references the storage {show(pid)}, not ('storage', storage type, key, location, element "
                'count) as torch.save writes it')
    element_size = storage_sizes().get(a[1].name)
    if element_size is None:
        return f'its storage {show(a[2])} has the type {show(a[1])}, which is not a torch storage type'
    record = records.get(f'data/{a[2]}'.lower())
    if record is None:
        return f'its pickle uses the storage {show(a[2])}, but the archive has no entry data/{show(a[2])[1:-1]}'
    size = a[4] * element_size
    if record.file_size != size:
        return (f'its storage {show(a[2])} declares {a[4]} elements of {show(a[1])} ({size} bytes), but its entry '
                f'{record.filename!r} holds {record.file_size} bytes; torch.save writes each storage whole')
    return None


def pickle_problem(data: bytes, records: dict) -> Optional[str]:
    """Why the pickle ``data`` of a checkpoint is not what torch.save writes, checked before anything unpickles it.

    The opcodes are followed on a stack of what they push, without building anything (:class:`PickleScan`).
    ``records``: the archive's entries by lower-cased name relative to its folder. Linear in ``len(data)``.
    """
    scan = PickleScan(records)
    try:
        for op, arg, pos in pickletools.genops(data):
            problem = scan.step(op.name, arg)
            if problem:
                return f'{problem} (opcode {op.name} at byte {pos} of data.pkl)'
    except IndexError:
        return f'its pickle is malformed: the opcode {op.name} at byte {pos} of data.pkl needs more values than it has'
    except (ValueError, UnicodeDecodeError) as e:
        return f'its data.pkl is not a readable pickle ({short_text(str(e))})'
    return None


class PickleScan:
    """The stack, marks and memo of a pickle as its opcodes would build them, holding literals and :class:`Node` s.

    Every call must name a global and be one torch.save, numpy or mmengine writes (:func:`call_problem`:
    ``_codecs.encode`` only with the ``latin1`` codec, no allocation of a declared size, no copy of a view), every
    dict key and set element must hash in at most ``MAX_KEY_NODES`` steps, and every storage must be an entry
    holding exactly the bytes the pickle declares (:func:`storage_problem`). The stack works as in torch's
    weights-only unpickler: MARK starts a new stack, and TUPLE, APPENDS and SETITEMS go back to the one before.
    """

    def __init__(self, records: dict):
        self.records, self.stack, self.marks, self.memo = records, [], [], {}

    def step(self, name: str, arg) -> Optional[str]:
        stack = self.stack
        if name not in PICKLE_OPS:
            return f"its pickle uses {name}, which torch.save (protocol 2) never writes and torch's weights-only " \
                   'unpickler does not read'
        if name in ('BINPUT', 'LONG_BINPUT'):  # the most frequent first
            self.memo[arg] = stack[-1]
        elif name in TEXT_AND_NUMBERS:
            stack.append(arg)
        elif name in ('BINGET', 'LONG_BINGET'):
            if arg not in self.memo:
                return f'its pickle reads the memo entry {arg} before writing it'
            stack.append(self.memo[arg])
        elif name == 'MARK':
            self.marks.append(stack)
            self.stack = []
        elif name in ('TUPLE', 'APPENDS', 'SETITEMS'):
            items, self.stack = stack, self.marks.pop()
            if name == 'TUPLE':
                self.stack.append(tuple_node(items))
            elif name == 'APPENDS':
                return append_problem(self.stack[-1], items)
            else:
                return 'its pickle sets an odd number of dict values' if len(items) % 2 else \
                    setitem_problem(self.stack[-1], items[::2])
        elif name in ('TUPLE1', 'TUPLE2', 'TUPLE3'):
            count = int(name[-1])
            if len(stack) < count:
                raise IndexError
            stack[-count:] = [tuple_node(stack[-count:])]
        elif name == 'EMPTY_TUPLE':
            stack.append(tuple_node(()))
        elif name in ('EMPTY_LIST', 'EMPTY_DICT', 'EMPTY_SET'):
            stack.append(Node(name[6:].lower()))
        elif name == 'APPEND':
            item = stack.pop()
            return append_problem(stack[-1], [item])
        elif name == 'SETITEM':
            stack.pop()
            key = stack.pop()
            return setitem_problem(stack[-1], [key])
        elif name == 'GLOBAL':
            if arg.count(' ') != 1:
                return f'its pickle names the global {show(arg)}, which is not one module and one name'
            stack.append(Node('global', global_name(*arg.split(' '))))
        elif name in ('REDUCE', 'NEWOBJ'):
            args, func = stack.pop(), stack.pop()
            if not is_global(func) or not (isinstance(args, Node) and args.kind == 'tuple'):
                return (f'its pickle calls {show(func)} with {show(args)}; torch.save calls only named globals, '
                        'with a tuple of arguments')
            problem = call_problem(func.name, args) if name == 'REDUCE' else new_object_problem(func.name, args)
            stack.append(Node('call', func.name, nodes=args.nodes))
            return problem
        elif name == 'BUILD':
            state = stack.pop()
            if not stack:
                raise IndexError
            if isinstance(state, Node) and state.kind == 'tuple' and max(map(nodes, state.items), default=0) > \
                    MAX_KEY_NODES:  # a state of pairs updates an object's __dict__: the first of each is hashed
                return (f'its pickle sets the state of an object from a tuple holding more than {MAX_KEY_NODES} '
                        'nested values in one item (torch.save writes a dict, or a short tuple of plain values)')
        elif name == 'BINPERSID':
            problem = storage_problem(stack.pop(), self.records)
            stack.append(Node('storage'))
            return problem
        elif name == 'SHORT_BINSTRING':
            stack.append(Node('string'))
        elif name == 'STOP':
            stack.pop()
        elif name != 'PROTO':
            stack.append({'NONE': None, 'NEWTRUE': True, 'NEWFALSE': False}[name])
        return None


def new_object_problem(name: str, args: Node) -> Optional[str]:
    if name in NEW_OBJECTS and not args.items:
        return None
    return f'it creates {name}{show(args)}, which is not one of {sorted(NEW_OBJECTS)} created without arguments'


def append_problem(target, items) -> Optional[str]:
    if not (isinstance(target, Node) and target.kind == 'list'):
        return f'its pickle appends to {show(target)}, not a list'
    target.widest = max([target.widest, *map(nodes, items)])
    return None


def setitem_problem(target, keys) -> Optional[str]:
    if not (isinstance(target, Node) and (target.kind == 'dict' or target.kind == 'call' and target.name in (
            'collections.OrderedDict', 'collections.Counter'))):
        return f'its pickle sets items of {show(target)}, not a dict'
    for key in keys:
        if nodes(key) > MAX_KEY_NODES:
            return (f'its pickle uses a dict key of more than {MAX_KEY_NODES} nested values (a value shared with '
                    'itself, whose hash would visit each copy)')
    return None
