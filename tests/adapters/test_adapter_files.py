"""Adapter files: safetensors with metadata, refused on any mismatch, never partly applied."""
import json
import os
import pickle

import pytest
import torch
from safetensors import safe_open

from petah_mm.adapters import AdapterFileError, adapted_layers, is_adapter_key
from petah_mm.adapters.io import read_tensor_file, write_tensor_file
from petah_mm.testing import randomise_adapters


@pytest.fixture
def pair(build_ef):
    """A trained PETAH-2 L1 and a fresh one with the same frozen weights."""
    source = randomise_adapters(build_ef('petah'), seed=1, std=0.1)  # as if trained
    target = build_ef('petah')
    target.load_state_dict({k: v for k, v in source.state_dict().items() if k not in source.task_param_names},
                           strict=False)
    return source, target


def adapter_state(model):
    return {k: v.clone() for k, v in model.task_state_dict().items()}


def test_roundtrip_restores_outputs_and_metadata(pair, tmp_path):
    source, target = pair
    path = tmp_path / 'task.safetensors'
    size = source.save_adapter(path)
    assert size == path.stat().st_size
    with safe_open(str(path), 'pt') as f:
        meta = f.metadata()
        assert set(f.keys()) == set(source.task_param_names)
    assert meta['format'] == 'petah_mm.adapter'
    assert json.loads(meta['method']) == 'petah' and json.loads(meta['arch']) == 'l1'
    assert json.loads(meta['adapters']) == {'attn': {'type': 'lora', 'rank': 8, 'alpha': 8.0},
                                            'conv': {'type': 'lora', 'rank': 2, 'alpha': 2.0}}
    assert len(json.loads(meta['frozen_fingerprint'])) == 16
    target.load_adapter(path)
    source.eval(), target.eval()
    x = torch.randn(1, 3, 64, 64)
    for a, b in zip(source(x), target(x)):
        assert torch.equal(a, b)


def test_only_adapter_tensors_are_saved(pair, tmp_path):
    source, _ = pair
    source.save_adapter(tmp_path / 'a.safetensors')
    tensors, _ = read_tensor_file(tmp_path / 'a.safetensors', kind='adapter')
    assert all('.adapter.lora_' in name for name in tensors)
    assert len(tensors) == 2 * len(adapted_layers(source))


def expect_refusal(target, path, match):
    before = adapter_state(target)
    with pytest.raises(AdapterFileError, match=match):
        target.load_adapter(path)
    after = adapter_state(target)
    assert all(torch.equal(before[k], after[k]) for k in before), 'a refused file was partly applied'


def test_wrong_architecture(pair, build_ef, tmp_path):
    source, _ = pair
    source.save_adapter(tmp_path / 'l1.safetensors')
    expect_refusal(build_ef('petah', arch='l3'), tmp_path / 'l1.safetensors', "arch mismatch.*'l1'.*'l3'")


def test_wrong_method_or_rank(pair, build_ef, tmp_path):
    source, _ = pair
    source.save_adapter(tmp_path / 'p2.safetensors')
    expect_refusal(build_ef('lora_attn'), tmp_path / 'p2.safetensors', 'method mismatch')
    expect_refusal(build_ef('petah', adapter=dict(conv_rank=1)), tmp_path / 'p2.safetensors', 'adapters mismatch')


def test_different_frozen_weights(pair, tmp_path):
    source, target = pair
    source.save_adapter(tmp_path / 'a.safetensors')
    with torch.no_grad():
        target.patch_embed[0].conv.weight[0, 0, 0, 0] += 1e-3
    expect_refusal(target, tmp_path / 'a.safetensors', 'different frozen weights')


def rewrite(path, out, edit):
    tensors, meta = read_tensor_file(path, kind='adapter')
    edit(tensors)
    write_tensor_file(out, tensors, meta, kind='adapter')


def test_missing_extra_and_misshapen_tensors(pair, tmp_path):
    source, target = pair
    good = tmp_path / 'a.safetensors'
    source.save_adapter(good)
    name = sorted(source.task_param_names)[0]
    rewrite(good, tmp_path / 'missing.safetensors', lambda t: t.pop(name))
    expect_refusal(target, tmp_path / 'missing.safetensors', f'missing .*{name}')
    rewrite(good, tmp_path / 'extra.safetensors', lambda t: t.update({'network.9.adapter.lora_A': torch.zeros(1)}))
    expect_refusal(target, tmp_path / 'extra.safetensors', r'unexpected .*network\.9')
    rewrite(good, tmp_path / 'shape.safetensors', lambda t: t.update({name: t[name].flatten()}))
    expect_refusal(target, tmp_path / 'shape.safetensors', f'{name}.*shape')


@pytest.mark.parametrize('dtype', [torch.float16, torch.int64])
def test_wrongly_typed_tensors_are_refused_not_cast(pair, tmp_path, dtype):
    source, target = pair
    source.save_adapter(tmp_path / 'a.safetensors')
    name = sorted(source.task_param_names)[0]
    rewrite(tmp_path / 'a.safetensors', tmp_path / 'typed.safetensors', lambda t: t.update({name: t[name].to(dtype)}))
    expect_refusal(target, tmp_path / 'typed.safetensors', f"typed.safetensors: tensor '{name}' is {dtype}")


def test_non_finite_adapter_is_refused(pair, tmp_path):
    source, target = pair
    with torch.no_grad():
        next(p for n, p in source.named_parameters() if is_adapter_key(n)).view(-1)[0] = float('nan')
    source.save_adapter(tmp_path / 'nan.safetensors')
    expect_refusal(target, tmp_path / 'nan.safetensors', 'nan.safetensors: tensor .* holds NaN or Inf')


def test_a_flipped_byte_in_the_tensor_data_is_refused(pair, tmp_path):
    source, target = pair
    source.save_adapter(tmp_path / 'a.safetensors')
    data = bytearray((tmp_path / 'a.safetensors').read_bytes())
    data[-10] ^= 0x04
    (tmp_path / 'flipped.safetensors').write_bytes(bytes(data))
    expect_refusal(target, tmp_path / 'flipped.safetensors', 'sha256 mismatch')


def test_existing_file_is_not_overwritten_without_force(pair, tmp_path):
    source, _ = pair
    source.save_adapter(tmp_path / 'a.safetensors')
    before = (tmp_path / 'a.safetensors').read_bytes()
    randomise_adapters(source, seed=3, std=0.1)
    with pytest.raises(FileExistsError, match='force'):
        source.save_adapter(tmp_path / 'a.safetensors')
    assert (tmp_path / 'a.safetensors').read_bytes() == before
    source.save_adapter(tmp_path / 'a.safetensors', force=True)
    assert (tmp_path / 'a.safetensors').read_bytes() != before


def test_truncated_and_corrupt_files(pair, tmp_path):
    source, target = pair
    good = tmp_path / 'a.safetensors'
    source.save_adapter(good)
    data = good.read_bytes()
    (tmp_path / 'cut.safetensors').write_bytes(data[:len(data) // 2])
    expect_refusal(target, tmp_path / 'cut.safetensors', 'truncated or corrupt')
    (tmp_path / 'garbage.safetensors').write_bytes(os.urandom(4096))
    expect_refusal(target, tmp_path / 'garbage.safetensors', 'truncated or corrupt')
    expect_refusal(target, tmp_path / 'absent.safetensors', 'does not exist')


class Bomb:
    """Unpickling this would create a file: loading must never unpickle."""

    def __reduce__(self):
        return (open, (str(MARKER), 'w'))


MARKER = None


def test_loading_never_unpickles(pair, tmp_path):
    global MARKER
    MARKER = tmp_path / 'pwned'
    _, target = pair
    (tmp_path / 'evil.safetensors').write_bytes(pickle.dumps({'x': Bomb()}))
    expect_refusal(target, tmp_path / 'evil.safetensors', 'truncated or corrupt')
    assert not MARKER.exists()


def test_interrupted_write_keeps_the_previous_file(pair, tmp_path, monkeypatch):
    source, _ = pair
    path = tmp_path / 'a.safetensors'
    source.save_adapter(path)
    original = path.read_bytes()
    randomise_adapters(source, seed=2, std=0.1)

    def crash(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', crash)
    with pytest.raises(OSError, match='disk full'):
        source.save_adapter(path, force=True)
    assert path.read_bytes() == original
    assert [p.name for p in tmp_path.iterdir()] == ['a.safetensors']


def test_merged_backbone_refuses_to_save(pair, tmp_path):
    source, _ = pair
    source.merge_adapters()
    with pytest.raises(RuntimeError, match='unmerge'):
        source.save_adapter(tmp_path / 'a.safetensors')
