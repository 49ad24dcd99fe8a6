"""A checkpoint's pickle calls only what torch.save, numpy and mmengine write, checked opcode by opcode before torch
reads it (issue 31, failures 6 and 11): the attacker's files are written here by hand, opcode by opcode.

Failure 6: ``_codecs.encode(<distinct CJK text>, 'punycode')`` took 73 s for 62 KB through ``--resume``,
``load_from`` and ``init_cfg``; torch's own weights-only allow-list (``_codecs.encode`` with any codec) has the same
gap. Other cheap sinks of the allowed globals, found here: ``bytearray(2**33)`` (8 GB zeroed from a 20-byte pickle),
``bytearray(text, 'punycode')``, ``_rebuild_from_type_v2(_codecs.encode, ...)`` (an indirect call),
``_rebuild_device_tensor_from_cpu_tensor`` of an expanded view (a copy of 2**40 elements), ``torch.Tensor(n)``
(filled under deterministic algorithms), a callable or storage key that is a tuple sharing itself (torch prints it
in its error message: exponential time), a tensor state of that kind (printed by ``_set_obj_state``), and a dict
key or object state of that kind (hashed in exponential time).
Failure 11: a duplicated ``data.pkl`` (torch silently read the second) and a storage whose declared element count
exceeds its bytes (a bare ``RuntimeError``) are refused naming the file and the rule.
"""
import collections
import io
import struct
import time
import warnings
import zipfile

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModule
from mmengine.runner import load_checkpoint

from petah_mm.engine import CheckpointRefusedError, load_checkpoint_file
from petah_mm.engine.checkpoint_bounds import MAX_KEY_NODES
from petah_mm.engine.resume import check_resume

PROTO, STOP, MARK, TUPLE, TUPLE2, REDUCE, EMPTY_DICT, SETITEM = b'\x80\x02', b'.', b'(', b't', b'\x86', b'R', b'}', b's'
#: distinct CJK characters, which punycode encodes in time quadratic in their number (about 45 s here: issue 31)
CJK = ''.join(chr(0x4e00 + k) for k in range(16000))


def text(value: str) -> bytes:
    data = value.encode('utf-8')
    return b'X' + struct.pack('<I', len(data)) + data


def global_(module: str, name: str) -> bytes:
    return b'c' + f'{module}\n{name}\n'.encode()


def int_(value: int) -> bytes:
    return b'J' + struct.pack('<i', value) if value < 2 ** 31 else b'\x8a\x08' + struct.pack('<q', value)


def call(module: str, name: str, *args: bytes) -> bytes:
    return global_(module, name) + MARK + b''.join(args) + TUPLE + REDUCE


def put(index: int) -> bytes:
    return b'q' + bytes([index])


def get(index: int) -> bytes:
    return b'h' + bytes([index])


def shared_tuple(depth: int) -> bytes:
    """A tuple of itself twice, ``depth`` times over: 2**depth leaves in about 5 bytes per level."""
    pickle = b')' + put(0)
    for level in range(depth):
        pickle += get(level) + TUPLE2 + put(level + 1)
    return pickle


def storage(key: str, numel: int, storage_type: str = 'FloatStorage') -> bytes:
    """A persistent storage reference, as torch.save writes it."""
    return MARK + text('storage') + global_('torch', storage_type) + text(key) + text('cpu') + int_(numel) + TUPLE + \
        b'Q'


def tensor(key: str, numel: int, size: int, stride: int) -> bytes:
    return call('torch._utils', '_rebuild_tensor_v2', storage(key, numel), int_(0), int_(size) + b'\x85',
                int_(stride) + b'\x85', b'\x89', call('collections', 'OrderedDict'))


def checkpoint(path, pickle: bytes, entries=None, saved=None):
    """A torch.save zip of ``saved`` (default ``{'w': torch.zeros(2)}``: storage 0 of 8 bytes) whose data.pkl is
    ``pickle`` (a function of the saved data.pkl, or bytes), plus ``entries``."""
    buffer = io.BytesIO()
    torch.save({'w': torch.zeros(2)} if saved is None else saved, buffer)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith('/data.pkl'):
                data = pickle(data) if callable(pickle) else pickle
            dst.writestr(info.filename, data)
        for name, data in (entries or {}).items():
            dst.writestr(name, data)
    return path


def in_a_dict(value: bytes) -> bytes:
    return PROTO + EMPTY_DICT + text('meta') + value + SETITEM + STOP


@pytest.fixture(params=['add_safe_globals', 'restricted_unpickler'])
def torch_path(request, monkeypatch):
    """Both unpicklers: torch's weights-only one (torch >= 2.6), petah_mm's restricted one (older torch)."""
    if request.param == 'restricted_unpickler':
        monkeypatch.delattr(torch.serialization, 'add_safe_globals')
    return request.param


class Pretrained(BaseModule):

    def __init__(self, checkpoint):
        super().__init__(init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
        self.fc = torch.nn.Linear(2, 2)


ENTRY_POINTS = {
    'load_checkpoint_file': lambda path, tmp: load_checkpoint_file(path),
    'load_from': lambda path, tmp: load_checkpoint(torch.nn.Linear(2, 2), str(path), map_location='cpu'),
    'resume': lambda path, tmp: check_resume(Config(dict(work_dir=str(tmp), resume=True, load_from=str(path)))),
    'init_cfg Pretrained': lambda path, tmp: Pretrained(path).init_weights(),
}


@pytest.mark.parametrize('entry', ENTRY_POINTS)
def test_punycode_payload_is_refused_quickly_by_name_through_every_entry_point(tmp_path, torch_path, entry):
    path = checkpoint(tmp_path / 'punycode.pth', in_a_dict(call('_codecs', 'encode', text(CJK), text('punycode'))))
    start = time.perf_counter()
    with pytest.raises(CheckpointRefusedError, match=r"punycode\.pth'?:? .*it calls _codecs\.encode with the "
                                                     r"codec 'punycode'; torch\.save writes bytes only as "
                                                     r'_codecs\.encode'):
        ENTRY_POINTS[entry](path, tmp_path)
    assert time.perf_counter() - start < 5, 'the payload was decoded (it takes about 45 s)'


PAYLOADS = {
    'bytearray with a codec': (call('__builtin__', 'bytearray', text(CJK), text('punycode')),
                               r"it calls bytearray\('.*', 'punycode'\); pickle writes bytearray\(\) or "
                               r'bytearray\(bytes\)'),
    'bytearray of a size': (call('__builtin__', 'bytearray', int_(2 ** 33)), r'it calls bytearray\(8589934592\)'),
    'encode through _rebuild_from_type_v2': (
        call('torch._tensor', '_rebuild_from_type_v2', global_('_codecs', 'encode'), global_('torch', 'Tensor'),
             MARK + text(CJK) + text('punycode') + TUPLE, b'N'),
        r'it calls torch\._tensor\._rebuild_from_type_v2 with _codecs\.encode; torch\.save writes it only around'),
    'copy of an expanded view': (
        call('torch._utils', '_rebuild_device_tensor_from_cpu_tensor', tensor('0', 2, 2 ** 40, 0),
             global_('torch', 'float64'), text('cpu'), b'\x89'),
        r'its pickle calls torch\._utils\._rebuild_device_tensor_from_cpu_tensor\(<call>, torch\.float64, '),
    'legacy tensor constructor': (call('torch', 'Tensor', int_(2 ** 33)),
                                  r'its pickle calls torch\.Tensor\(8589934592\)'),
    'sparse tensor': (call('torch._utils', '_rebuild_sparse_tensor', global_('torch', 'sparse_coo'), b')'),
                      r'its pickle calls torch\._utils\._rebuild_sparse_tensor'),
    'callable that shares itself': (shared_tuple(40) + b')' + REDUCE,
                                    r'its pickle calls \(\(\.\.\.\), \(\.\.\.\)\) with \(\); torch\.save calls only'),
    'dict key that shares itself': (EMPTY_DICT + shared_tuple(40) + b'N' + SETITEM,
                                    rf'its pickle uses a dict key of more than {MAX_KEY_NODES} nested values'),
    'tensor state that shares itself': (
        call('torch._utils', '_rebuild_parameter_with_state', tensor('0', 2, 2, 1), b'\x89',
             call('collections', 'OrderedDict'), shared_tuple(40) + get(40) + get(40) + b'\x87'),
        r'it calls torch\._utils\._rebuild_parameter_with_state with a state of 3 values; torch writes a dict'),
    'object state that shares itself': (call('collections', 'OrderedDict') + shared_tuple(40) + b'N' + TUPLE2
                                        + b'\x85' + b'b', r'its pickle sets the state of an object from a tuple'),
    'storage key that shares itself': (
        MARK + text('storage') + global_('torch', 'FloatStorage') + shared_tuple(40) + text('cpu') + int_(2) + TUPLE
        + b'Q', r"it references the storage \('storage', torch\.FloatStorage, \(\.\.\.\), 'cpu', 2\), not"),
    'storage larger than its entry': (tensor('0', 2 ** 20, 2 ** 20, 1),
                                      r"its storage '0' declares 1048576 elements of torch\.FloatStorage \(4194304 "
                                      r"bytes\), but its entry '.*/data/0' holds 8 bytes"),
    'storage without an entry': (tensor('7', 2, 2, 1),
                                 r"its pickle uses the storage '7', but the archive has no entry data/7"),
    'protocol 4 opcode': (b'\x95' + struct.pack('<Q', 1) + b'N',
                          r"its pickle uses FRAME, which torch\.save \(protocol 2\)"),
}


@pytest.mark.parametrize('payload', PAYLOADS)
def test_other_sinks_of_the_allowed_globals_are_refused_before_unpickling(tmp_path, torch_path, payload):
    pickle, reason = PAYLOADS[payload]
    path = checkpoint(tmp_path / 'evil.pth', in_a_dict(pickle))
    start = time.perf_counter()
    with pytest.raises(CheckpointRefusedError, match=rf"evil\.pth'?: {reason}.* \(opcode \w+ at byte \d+ of data\.pkl\)"
                       ) as refused:
        load_checkpoint_file(path)
    assert time.perf_counter() - start < 5
    assert len(str(refused.value)) < 1500


@pytest.mark.parametrize('name', ['archive/data.pkl', 'archive/DATA.PKL'])
def test_a_duplicated_data_pkl_is_refused_naming_the_file(tmp_path, name):
    """torch's zip reader matches names without case and read the second entry: the two readers must not differ."""
    with warnings.catch_warnings():  # zipfile warns of the duplicated name it is asked to write
        warnings.simplefilter('ignore')
        path = checkpoint(tmp_path / 'twice.pth', in_a_dict(b'N'), entries={name: PROTO + EMPTY_DICT + STOP})
    with pytest.raises(CheckpointRefusedError, match=r"twice\.pth'?: its zip archive holds more than one entry named "
                                                     r"'archive/data\.pkl' \(names compared without case"):
        load_checkpoint_file(path)


def test_long_values_are_quoted_short(tmp_path):
    """Refusals quote at most a few hundred characters: a 1 MB codec name, a 1 MB global name."""
    for pickle in (call('_codecs', 'encode', text('x'), text('p' * 2 ** 20)), call('m' * 2 ** 20, 'f')):
        with pytest.raises(CheckpointRefusedError) as refused:
            load_checkpoint_file(checkpoint(tmp_path / 'long.pth', in_a_dict(pickle)))
        assert 'long.pth' in str(refused.value) and len(str(refused.value)) < 1500


def genuine_values() -> dict:
    tagged = torch.arange(3.)
    tagged.note = 'kept'  # a tensor with attributes: _rebuild_from_type_v2 as well
    return dict(bytes=bytes(range(256)) * 4, bytearray=bytearray(b'\x00\xffab'), empty_array=bytearray(),
                set={1, 2, 'three'}, complex=1 + 2j, array=np.arange(5, dtype=np.int64), floats=np.ones(3, np.float32),
                scalar=np.float64(2.5), flag=np.bool_(True), size=torch.Size([2, 3]), device=torch.device('cpu'),
                parameter=torch.nn.Parameter(torch.ones(2)), tagged=tagged, subclass=torch.ones(2).as_subclass(
                    torch.Tensor), half=torch.ones(2, dtype=torch.float16), counter=collections.Counter({3: 1}),
                ordered=collections.OrderedDict(a=torch.zeros(1)), key_tuple={(1, 'a'): 2}, none=None,
                python_rng=__import__('random').getstate(), big_int=2 ** 100, text='é' * 10)


def test_genuine_checkpoints_with_bytes_and_numpy_still_load(tmp_path, torch_path):
    values = genuine_values()
    torch.save(values, tmp_path / 'ok.pth')
    loaded = load_checkpoint_file(tmp_path / 'ok.pth')
    assert loaded.keys() == values.keys()
    for key, value in values.items():
        if isinstance(value, (torch.Tensor, np.ndarray)):
            assert type(loaded[key]) is type(value) and (loaded[key] == value).all(), key
        else:
            assert loaded[key] == value, key
    assert loaded['tagged'].note == 'kept'


def test_a_checkpoint_written_on_a_gpu_passes_the_checks(tmp_path):
    """torch.save of CUDA tensors writes the storage location 'cuda:0'; ``map_location='cpu'`` reads it anywhere."""
    path = checkpoint(tmp_path / 'gpu.pth', lambda pickle: pickle.replace(text('cpu'), text('cuda:0')),
                      saved={'w': torch.arange(4.)})
    assert torch.equal(load_checkpoint_file(path, map_location='cpu')['w'], torch.arange(4.))
    if not torch.cuda.is_available():  # torch's own refusal, with the file named
        with pytest.raises(CheckpointRefusedError, match=r"gpu\.pth'?: torch\.load\(weights_only=True\) failed on it "
                                                         r'\(RuntimeError: .*CUDA'):
            load_checkpoint_file(path)


def test_errors_of_the_rebuild_functions_name_the_file(tmp_path):
    path = checkpoint(tmp_path / 'bad_args.pth', in_a_dict(call('torch._utils', '_rebuild_tensor_v2', text('x'))))
    with pytest.raises(CheckpointRefusedError, match=r"bad_args\.pth'?: torch\.load\(weights_only=True\) failed on "
                                                     r'it \(TypeError: .*_rebuild_tensor_v2'):
        load_checkpoint_file(path)


def test_an_archive_the_two_zip_readers_read_differently_is_refused(tmp_path):
    """Python's zip reader skips bytes before the archive; torch's reads the offsets as written."""
    path = checkpoint(tmp_path / 'shifted.pth', lambda pickle: pickle)
    path.write_bytes(b'PK\x03\x04' + b'x' * 100 + path.read_bytes())
    with pytest.raises(CheckpointRefusedError, match=r"shifted\.pth'?: torch's zip reader cannot read its data\.pkl"):
        load_checkpoint_file(path)
