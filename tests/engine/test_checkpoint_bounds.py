"""A checkpoint of N bytes never makes petah_mm allocate much more than N, and every tool reads files through
the project's loader: the attacks of issue 23 (a 1.6 KB ``.pth`` holding ``torch.zeros(1).expand(2**42)``, a
``.safetensors`` handed to ``sparse_pack``) and their relatives."""
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from petah_mm.engine import CheckpointRefusedError, load_checkpoint_file
from petah_mm.engine.checkpoint_bounds import EXPANSION, MAX_DEPTH
from petah_mm.tools.deployment import sparse_pack
from petah_mm.utils.tensor_file import write_tensor_file


def save(path, obj, **kwargs):
    torch.save(obj, path, **kwargs)
    return path


@pytest.mark.parametrize('view, name', [
    (torch.zeros(1).expand(2 ** 42), 'expanded'),
    (torch.zeros(4).expand(3, 4), 'expanded rows'),
    (torch.zeros(20).as_strided((10, 10), (1, 1)), 'overlapping'),
    (torch.zeros(20).as_strided((3, 4), (4, 0)), 'stride 0 inside'),
])
def test_views_larger_than_their_storage_are_refused(tmp_path, view, name):
    path = save(tmp_path / 'view.pth', dict(state_dict={'backbone.w': view}))
    assert path.stat().st_size < 4096
    with pytest.raises(CheckpointRefusedError, match=r"view\.pth.*tensor \['state_dict'\]\['backbone.w'\] is a view "
                                                     r'of \d+ elements .* an expanded or overlapping view'):
        load_checkpoint_file(path)


def test_views_within_their_storage_load(tmp_path):
    base = torch.arange(24.).view(4, 6)
    views = {'t': base.t(), 'slice': base[:, ::2], 'narrow': base[1:3], 'empty': base[:0], 'one': base[2:3, 1:2],
             'scalar': torch.tensor(3.), 'expanded_size1': torch.zeros(1, 5).expand(1, 5)}
    loaded = load_checkpoint_file(save(tmp_path / 'ok.pth', dict(state_dict=views)))['state_dict']
    for name, view in views.items():
        assert torch.equal(loaded[name], view), name


def test_many_references_to_one_tensor_are_bounded_by_the_file_size(tmp_path):
    """Each reference costs a few bytes of pickle; a tool that copies every entry would copy the storage each time."""
    big = torch.zeros(64 * 1024)  # 256 KB
    path = save(tmp_path / 'refs.pth', dict(state_dict={f'w{i}': big for i in range(2000)}))
    with pytest.raises(CheckpointRefusedError, match=rf"refs\.pth.*up to \['state_dict'\]\['w\d+'\] hold \d+ bytes, "
                                                     rf'more than {EXPANSION} times its \d+ bytes'):
        load_checkpoint_file(path)


def test_containers_shared_many_times_are_bounded(tmp_path):
    """Each level doubles the places one tensor is held: 2**40 places from a pickle of about 1 KB."""
    shared = {'w': 'x'}
    for _ in range(40):
        shared = [shared, shared]
    with pytest.raises(CheckpointRefusedError, match=r'shared\.pth.*containers hold more than \d+ entries'):
        load_checkpoint_file(save(tmp_path / 'shared.pth', dict(meta=shared)))


class ExpandedArray:
    """Pickles as ``numpy.ndarray((2**40,), float64, buffer=8 bytes, strides=(0,))``: 8 TB over 8 bytes."""

    def __reduce__(self):
        return np.ndarray, ((2 ** 40,), np.dtype('float64'), b'x' * 8, 0, (0,))


class HugeArray:
    """Pickles as ``numpy.ndarray((2**45,))``: numpy would try to allocate 256 TiB while unpickling."""

    def __reduce__(self):
        return np.ndarray, ((2 ** 45,), np.dtype('float64'))


class HugeReconstruct:
    """Pickles as numpy's own ``_reconstruct(ndarray, (2**45,), b'b')``, which numpy writes with the shape (0,)."""

    def __reduce__(self):
        return np.core.multiarray._reconstruct, (np.ndarray, (2 ** 45,), b'b')


@pytest.mark.parametrize('array, call', [
    (ExpandedArray(), r'numpy\.ndarray\(\(\.\.\.\)'),
    (HugeArray(), r'numpy\.ndarray\(\(\.\.\.\)'),
    (HugeReconstruct(), r'numpy\._?core\.multiarray\._reconstruct\(numpy\.ndarray'),
])
def test_numpy_arrays_of_a_declared_size_are_refused_before_allocating(tmp_path, array, call):
    """numpy writes an array as ``_reconstruct(ndarray, (0,), b'b')`` plus its data; other calls allocate (or view)
    the size the pickle declares, so they are refused before anything is unpickled."""
    path = save(tmp_path / 'array.pth', dict(meta=dict(seed=array)))
    with pytest.raises(CheckpointRefusedError, match=rf"array\.pth'?: its pickle calls {call}.*opcode REDUCE"):
        load_checkpoint_file(path)


def test_deep_nesting_is_refused_with_a_clear_error(tmp_path):
    nested = torch.zeros(1)
    for _ in range(MAX_DEPTH + 5):
        nested = [nested]
    with pytest.raises(CheckpointRefusedError, match=rf'deep\.pth.*nests containers more than {MAX_DEPTH} deep'):
        load_checkpoint_file(save(tmp_path / 'deep.pth', dict(meta=nested)))


def test_compressed_zip_entries_are_refused_before_loading(tmp_path):
    plain = save(tmp_path / 'plain.pth', dict(state_dict={'w': torch.zeros(1000)}))
    packed = tmp_path / 'packed.pth'
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, 'w', zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    with pytest.raises(CheckpointRefusedError, match=r'packed\.pth.*are compressed'):
        load_checkpoint_file(packed)


@pytest.mark.parametrize('content, reason', [
    (b'', 'the file is empty'),
    (b'hello world\n', r"not a torch checkpoint \(a zip archive\): it starts with b'hello world"),
    (b"_base_ = ['x.py']\n", 'not a torch checkpoint'),
    (b'PK\x03\x04' + b'\0' * 40, 'not a readable zip archive'),
])
def test_files_that_are_not_checkpoints_are_refused_saying_what_they_are(tmp_path, content, reason):
    (tmp_path / 'x.pth').write_bytes(content)
    with pytest.raises(CheckpointRefusedError, match=rf"x\.pth'?: .*{reason}"):
        load_checkpoint_file(tmp_path / 'x.pth')


def test_pre_zip_torch_format_is_refused(tmp_path):
    path = save(tmp_path / 'old.pth', {'w': torch.zeros(2)}, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointRefusedError, match=r"old\.pth.*pre-1\.6 \(non-zip\) format"):
        load_checkpoint_file(path)


def test_safetensors_files_are_refused_by_the_checkpoint_loader(tmp_path):
    """torch.load of torch >= 2.9 reads safetensors itself, which would skip petah_mm's tensor-file checks."""
    save_file({'w': torch.zeros(3)}, tmp_path / 'other.safetensors')
    with pytest.raises(CheckpointRefusedError, match=r'other\.safetensors.*a safetensors file, not a \.pth'):
        load_checkpoint_file(tmp_path / 'other.safetensors')
    write_tensor_file(tmp_path / 'adapter.safetensors', {'lora_A': torch.zeros(2, 2)}, {}, kind='adapter')
    with pytest.raises(CheckpointRefusedError, match=r"petah_mm adapter file \(safetensors\).*load_adapter\(\)"):
        load_checkpoint_file(tmp_path / 'adapter.safetensors')


def test_sparse_pack_refuses_an_adapter_file_and_an_expanded_view(tmp_path):
    """The tool reads through the project's loader: no per-tool check, no allocation."""
    write_tensor_file(tmp_path / 'adapter.safetensors', {'lora_A': torch.zeros(2, 2)}, {}, kind='adapter')
    with pytest.raises(CheckpointRefusedError, match='petah_mm adapter file'):
        sparse_pack.main(['pack', str(tmp_path / 'adapter.safetensors'), str(tmp_path / 'out.safetensors')])
    save(tmp_path / 'huge.pth', dict(state_dict={'w': torch.zeros(1).expand(2 ** 42)}))
    with pytest.raises(CheckpointRefusedError, match=r"huge\.pth.*\['state_dict'\]\['w'\].*17592186044416 bytes"):
        sparse_pack.main(['pack', str(tmp_path / 'huge.pth'), str(tmp_path / 'out.safetensors')])
    assert not (tmp_path / 'out.safetensors').exists()
