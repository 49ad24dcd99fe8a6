"""Sparse backbones: pruning, mask-preserving fine-tuning, Sparse-PETAH deployments, compact storage."""
import json
import pickle
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner, load_checkpoint
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.nn.utils import prune as torch_prune

from petah_mm.adapters import adapted_layers
from petah_mm.models import DenseEfficientFormer, PETAHEfficientFormer, build_backbone_from_config
from petah_mm.sparse import (PreserveSparsityHook, SparseFileError, magnitude_masks, prunable_weights, prune_,
                             read_checkpoint, read_packed, sparsity_by_kind, weight_kinds, write_checkpoint,
                             write_packed)
from petah_mm.sparse.storage import pack_state_dict
from petah_mm.testing import randomise_adapters
from petah_mm.tools.analysis import sparse_deployment
from petah_mm.tools.deployment import prune_backbone, sparse_pack
from petah_mm.utils import machine
from petah_mm.utils.tensor_file import FORMAT_VERSION, tensor_digest
from helpers import REPO, assert_close_scaled, reduction_length

TRUNK = dict(arch='l1', out_indices=[3], reshape_last_feat=False)
#: a config whose backbone is the EfficientFormer-L1 classification trunk (TRUNK)
L1_CONFIG = str(REPO / 'configs' / 'toy' / 'ef-l1-petah2_toy-cls.py')


@pytest.fixture(scope='module')
def sparse_l1(tmp_path_factory):
    """A 90%-sparse random EfficientFormer-L1 written by the pruning tool."""
    path = tmp_path_factory.mktemp('sparse') / 'ef-l1-sparse90.pth'
    prune_backbone.main([L1_CONFIG, str(path), '--random-init'])
    return path


def sparse_backbone(ckpt, method):
    backbone = PETAHEfficientFormer(adapter=dict(method=method, conv_rank=2), **TRUNK,
                                    init_cfg=dict(type='Pretrained', checkpoint=str(ckpt)))
    backbone.init_weights()
    return backbone


# ------------------------------------------------------------------------------------------- pruning


def layers_of_many_scales():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 16, 1), nn.Linear(16, 32), nn.Linear(32, 4))
    with torch.no_grad():
        for scale, layer in zip((1., 0.1, 3., 0.5), model):
            layer.weight.mul_(scale)
    return model


@pytest.mark.parametrize('sparsity', [0.9, 0.37])
def test_masks_match_torch_prune(sparsity):
    """Against torch.nn.utils.prune: the same entries go, per layer and globally."""
    model = layers_of_many_scales()
    weights = prunable_weights(model)
    layer_masks = magnitude_masks(weights, sparsity, 'layer')
    global_masks = magnitude_masks(weights, sparsity, 'global')
    for index, layer in enumerate(model):
        torch_prune.l1_unstructured(layer, 'weight', amount=sparsity)
        assert torch.equal(layer_masks[f'{index}.weight'], layer.weight_mask.bool())
    model = layers_of_many_scales()
    torch_prune.global_unstructured([(layer, 'weight') for layer in model], torch_prune.L1Unstructured,
                                    amount=sparsity)
    for index, layer in enumerate(model):
        assert torch.equal(global_masks[f'{index}.weight'], layer.weight_mask.bool())
    assert not torch.equal(global_masks['1.weight'], layer_masks['1.weight'])  # scales differ: scopes differ


def test_bad_pruning_arguments_are_refused():
    weights = prunable_weights(layers_of_many_scales())
    for sparsity in (1.0, -0.1):
        with pytest.raises(ValueError, match=r'sparsity must lie in \[0, 1\)'):
            magnitude_masks(weights, sparsity, 'layer')
    with pytest.raises(ValueError, match="unknown pruning scope 'block'"):
        magnitude_masks(weights, 0.5, 'block')


def test_only_conv_and_linear_weights_are_pruned():
    backbone = PETAHEfficientFormer(adapter=dict(method='frozen'), **TRUNK)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    weights = prune_(backbone, 0.9, 'layer')
    assert not [name for name in weights if re.search(r'bias|norm|\.ls\d|attention_biases|bn', name)]
    for name, tensor in backbone.state_dict().items():
        if name in weights:
            assert int((tensor == 0).sum()) == round(0.9 * tensor.numel())
            assert torch.equal(tensor[tensor != 0], before[name][tensor != 0])
        else:
            assert torch.equal(tensor, before[name]), name
    table = sparsity_by_kind(weights, weight_kinds(backbone))
    assert list(table) == ['3x3 convs', '1x1 convs', 'attention linears', 'MLP linears', 'total']
    assert table['total'][1] == sum(w.numel() for w in weights.values())
    assert table['attention linears'][1] == sum(m.weight.numel() for n, m in backbone.named_modules()
                                                if re.search(r'token_mixer\.(qkv|proj)$', n))


def test_prune_tool_reads_any_layout_and_writes_a_loadable_checkpoint(tmp_path, capsys):
    source = timm.create_model('efficientformer_l1', pretrained=False)
    torch.save(source.state_dict(), tmp_path / 'timm.pth')
    out = tmp_path / 'pruned.pth'
    prune_backbone.main([L1_CONFIG, str(out), '--checkpoint', str(tmp_path / 'timm.pth')])
    printed = capsys.readouterr().out
    title = f'PETAHEfficientFormer(l1) from {tmp_path / "timm.pth"}, magnitude-pruned (layer)'
    assert re.search(f'^{re.escape(title)}', printed, re.M), printed
    for kind in ('3x3 convs', '1x1 convs', 'attention linears', 'MLP linears', 'total'):
        assert re.search(rf'^{kind}\s+[\d,]+\s+[\d,]+\s+90\.00%$', printed, re.M), printed
    raw = torch.load(out, weights_only=True)
    assert all(k.startswith('backbone.') for k in raw['state_dict'])
    assert raw['meta']['pruning']['scope'] == 'layer' and raw['meta']['pruning']['sparsity'] == pytest.approx(0.9)
    assert raw['meta']['config'] == L1_CONFIG and raw['meta']['pruning']['source'] == str(tmp_path / 'timm.pth')

    dense = DenseEfficientFormer(**TRUNK, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'timm.pth')))
    dense.init_weights()
    sparse = sparse_backbone(out, 'petah')
    for name, weight in prunable_weights(sparse).items():
        reference = dense.state_dict()[name]
        kept = weight != 0
        assert kept.float().mean().item() == pytest.approx(0.1, abs=1e-3), name
        assert torch.equal(weight[kept], reference[kept])
        assert reference.abs()[kept].min() >= reference.abs()[~kept].max()  # the largest magnitudes survive


# ------------------------------------------------------------------------ mask-preserving fine-tuning


class TinyClassifier(BaseModel):
    """A linear head on the mean of the last output, (B, C, N) or (B, C, H, W), of ``channels``."""

    def __init__(self, backbone, channels=None):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(channels or backbone.embed_dims[-1], 3)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs)[-1].flatten(2).mean(-1))
        return dict(loss=F.cross_entropy(logits, labels)) if mode == 'loss' else logits


def train(tmp_path, backbone, hooks, iters=3, channels=None):
    data = [dict(inputs=torch.randn(3, 64, 64), labels=torch.tensor(i % 3)) for i in range(2 * iters)]
    runner = Runner(model=TinyClassifier(backbone, channels), work_dir=str(tmp_path),
                    train_dataloader=dict(dataset=data, batch_size=2, sampler=dict(type='DefaultSampler'),
                                          collate_fn=dict(type='default_collate')),
                    optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
                    train_cfg=dict(by_epoch=False, max_iters=iters), custom_hooks=hooks,
                    default_hooks=dict(checkpoint=None), default_scope='mmengine',
                    experiment_name=tmp_path.name)
    runner.train()
    return runner


@pytest.mark.parametrize('method', ['full', 'attn_ft'])
@pytest.mark.parametrize('with_hook', [True, False])
def test_fine_tuning_keeps_the_mask(sparse_l1, tmp_path, method, with_hook):
    backbone = sparse_backbone(sparse_l1, method)
    before = {name: w.detach().clone() for name, w in prunable_weights(backbone).items()}
    runner = train(tmp_path, backbone, [dict(type='PreserveSparsityHook')] if with_hook else [])
    optimizer = runner.optim_wrapper.optimizer
    moved = []
    for name, weight in prunable_weights(backbone).items():
        pruned = before[name] == 0
        if not weight.requires_grad:
            assert torch.equal(weight, before[name]), f'frozen {name} changed'
            continue
        assert (weight[~pruned] != before[name][~pruned]).float().mean() > 0.9, f'{name} did not train'
        moved.append(bool(weight[pruned].any()) or bool(optimizer.state[weight]['exp_avg'][pruned].any()))
    assert moved and (not any(moved) if with_hook else all(moved))


def test_hook_rezeroes_whatever_the_update_did_and_lets_go_after_training(sparse_l1):
    backbone = sparse_backbone(sparse_l1, 'attn_ft')
    runner = SimpleNamespace(model=nn.DataParallel(TinyClassifier(backbone)))  # unwrapped like DDP
    hook = PreserveSparsityHook()
    hook.before_train(runner)
    weights = {name: w for name, w in prunable_weights(backbone).items() if w.requires_grad}
    pruned = {name: w == 0 for name, w in weights.items()}
    with torch.no_grad():
        for weight in weights.values():
            weight.add_(1.)  # an update that ignores the (masked) gradient
    hook.after_train_iter(runner, 0)
    assert all(not w[pruned[n]].any() and w[~pruned[n]].all() for n, w in weights.items())
    hook.after_train(runner)
    backbone(torch.randn(1, 3, 64, 64))[-1].sum().backward()
    assert all(w.grad[pruned[n]].any() for n, w in weights.items()), 'gradients still masked after training'


def test_hook_refuses_what_it_cannot_preserve(sparse_l1, build_ef):
    def start(backbone, **kwargs):
        PreserveSparsityHook(**kwargs).before_train(SimpleNamespace(model=TinyClassifier(backbone)))

    with pytest.raises(ValueError, match='have no zero, so the loaded backbone is dense'):
        start(build_ef('full', **TRUNK))
    with pytest.raises(ValueError, match='no conv/linear weight of model.backbone .* trains'):
        start(sparse_backbone(sparse_l1, 'petah'))
    with pytest.raises(AttributeError, match="module='neck'"):
        start(sparse_backbone(sparse_l1, 'full'), module='neck')


# --------------------------------------------------------------------- the pruning tool, any backbone

RESNET = dict(type='mmdet.ResNet', depth=50, base_channels=16, zero_init_residual=False)
SWIN = dict(type='mmdet.SwinTransformer', embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8), window_size=4,
            convert_weights=False)
#: family -> (inner backbone, key prefix of the checkpoints its Pretrained init loads, channels of its last output)
FAMILIES = {'resnet50': (RESNET, '', 512), 'swin': (SWIN, 'backbone.', 256)}


def task_config(tmp_path, inner, checkpoint=None, name='config.py'):
    """A detection config whose backbone is PETAH-2 on ``inner``, pretrained from ``checkpoint``."""
    init_cfg = checkpoint and dict(type='Pretrained', checkpoint=str(checkpoint))
    backbone = dict(type='PETAHBackbone', adapter=dict(method='petah', rank=8, conv_rank=2),
                    backbone=dict(inner, init_cfg=init_cfg))
    (tmp_path / name).write_text(f"default_scope = 'mmdet'\nmodel = {dict(backbone=backbone)!r}\n")
    return str(tmp_path / name)


def upstream(inner, seed=1):
    """The plain inner backbone, as its library builds it."""
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(inner)


@pytest.mark.parametrize('family', FAMILIES)
def test_prune_tool_on_other_families(family, tmp_path, capsys):
    """The config's own pretrained weights, pruned per layer, written in the layout its init_cfg loads, which
    also loads into the plain backbone; fine-tuning from it keeps the mask."""
    inner, prefix, channels = FAMILIES[family]
    dense = upstream(inner).state_dict()
    torch.save(dict(state_dict={prefix + k: v for k, v in dense.items()}), tmp_path / 'upstream.pth')
    config = task_config(tmp_path, inner, tmp_path / 'upstream.pth')
    out = tmp_path / 'sparse.pth'
    prune_backbone.main([config, str(out)])
    printed = capsys.readouterr().out
    assert re.search(r'^total\s+[\d,]+\s+[\d,]+\s+90\.00%$', printed, re.M), printed
    raw = torch.load(out, weights_only=True)
    assert sorted(raw['state_dict']) == sorted(prefix + k for k in dense)  # no adapter tensors
    assert raw['meta']['pruning']['source'] == str(tmp_path / 'upstream.pth') and raw['meta']['config'] == config
    pruned = {k[len(prefix):]: v for k, v in raw['state_dict'].items()}
    for name in prunable_weights(upstream(inner)):
        kept = pruned[name] != 0
        assert kept.float().mean().item() == pytest.approx(0.1, abs=2e-3), name
        assert torch.equal(pruned[name][kept], dense[name][kept])

    plain = upstream(inner, seed=2)
    load_checkpoint(plain, str(out), strict=True, revise_keys=[(r'^backbone\.', '')])
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in pruned.items())
    sparse = build_backbone_from_config(config, 'full', checkpoint=str(out))
    sparse.init_weights()  # the config's own init, with checkpoint=OUT
    before = {name: w.detach().clone() for name, w in prunable_weights(sparse).items()}
    assert all(torch.equal(w, pruned[name]) for name, w in before.items())
    train(tmp_path, sparse, [dict(type='PreserveSparsityHook')], channels=channels)
    after = prunable_weights(sparse)
    assert all(torch.equal(after[name] == 0, w == 0) for name, w in before.items())
    assert all(not torch.equal(after[name], w) for name, w in before.items())


def test_prune_tool_takes_a_plain_backbone_too(tmp_path):
    """A config without PETAH: the file is the plain backbone's, pruned, and loads back into it."""
    (tmp_path / 'plain.py').write_text(f"default_scope = 'mmdet'\nmodel = {dict(backbone=RESNET)!r}\n")
    prune_backbone.main([str(tmp_path / 'plain.py'), str(tmp_path / 'sparse.pth'), '--random-init'])
    plain = upstream(RESNET)
    load_checkpoint(plain, str(tmp_path / 'sparse.pth'), strict=True)
    assert all((w == 0).float().mean().item() == pytest.approx(0.9, abs=2e-3) for w in prunable_weights(plain).values())


def test_prune_tool_errors_name_what_to_fix(tmp_path, capsys):
    main = prune_backbone.main
    out = tmp_path / 'out.pth'
    (tmp_path / 'no_backbone.py').write_text("model = dict(type='ImageClassifier')\n")
    no_weights = task_config(tmp_path, RESNET)
    usage_errors = {
        (str(tmp_path / 'no_backbone.py'), '--random-init'): f'{tmp_path / "no_backbone.py"} has no model.backbone',
        (no_weights, '--checkpoint', 'src.pth', '--random-init'): 'argument --random-init: not allowed with '
        'argument --checkpoint',
        (no_weights, ): f"model.backbone of {no_weights} loads no checkpoint (no init_cfg=dict(type='Pretrained', "
        'checkpoint=...)); pass --checkpoint SRC to prune SRC, or --random-init',
    }
    for (config, *options), message in usage_errors.items():
        with pytest.raises(SystemExit, match='2'):
            main([config, str(out), *options])
        assert message in capsys.readouterr().err

    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in upstream(RESNET).state_dict().items()}),
               tmp_path / 'detector.pth')  # mmengine loads bare ResNet keys unless init_cfg has a prefix
    with pytest.raises(ValueError, match=re.escape(f'{tmp_path / "detector.pth"} did not provide 53 conv/linear '
                                                   'weights of PETAHResNet(mmdet.ResNet(depth=50))')):
        main([no_weights, str(out), '--checkpoint', str(tmp_path / 'detector.pth')])
    converting = task_config(tmp_path, dict(SWIN, convert_weights=True), name='swin.py')
    with pytest.raises(ValueError, match=r'does not load back .* in any layout .*convert_weights=True'):
        main([converting, str(out), '--random-init'])
    assert not out.exists()
    out.touch()
    with pytest.raises(FileExistsError, match='pass --force'):
        main([no_weights, str(out), '--random-init'])


# ------------------------------------------------------------------------------- Sparse-PETAH


def test_merged_sparse_petah_kernels_are_dense(sparse_l1):
    model = randomise_adapters(sparse_backbone(sparse_l1, 'petah'), seed=1).eval()
    weights = prunable_weights(model)
    zeros = {name: w == 0 for name, w in weights.items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        unmerged = model(x)[0]
        model.merge_adapters()
        merged = model(x)[0]
    assert_close_scaled(merged, unmerged, reduction_length(model))
    adapted = {f'{name}.weight' for name in adapted_layers(model)}
    kinds = weight_kinds(model)
    assert {kinds[name] for name in weights if name not in adapted} == {'MLP linears'}
    for name, weight in weights.items():
        if name in adapted:
            assert weight.count_nonzero() == weight.numel(), f'{name}: W + ΔW still has zeros'
        else:
            assert torch.equal(weight == 0, zeros[name])
    model.unmerge_adapters()  # (0 + d) - d is exactly 0: the sparse base comes back with its mask
    assert all(torch.equal(w == 0, zeros[name]) for name, w in weights.items())


def test_unmerged_deployment_from_compact_base_and_adapter_file(sparse_l1, tmp_path):
    trained = randomise_adapters(sparse_backbone(sparse_l1, 'petah'), seed=1).eval()
    base = {k: v for k, v in trained.state_dict().items() if k not in trained.task_state_dict()}
    write_packed(tmp_path / 'base.safetensors', base)
    trained.save_adapter(tmp_path / 'task.safetensors')

    deployed = PETAHEfficientFormer(adapter=dict(method='petah', conv_rank=2), **TRUNK)
    state, _ = read_packed(tmp_path / 'base.safetensors')
    missing, unexpected = deployed.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) == set(deployed.task_state_dict())
    deployed.load_adapter(tmp_path / 'task.safetensors')  # refuses unless the base is bit-identical
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(deployed.eval()(x)[0], trained(x)[0])


def test_deployment_benchmark_runs(tmp_path):
    sparse_deployment.main(
        ['--arch', 'l1', '--size', '64', '--batch-sizes', '1', '2', '--warmup', '0', '--repeats', '1',
         '--out-dir', str(tmp_path)])
    report = json.loads((tmp_path / 'sparse_deployment.json').read_text())
    sizes = report['sizes_bytes']
    assert sizes['base_compact'] < 0.15 * sizes['base_dense']
    assert sizes['merged_dense'] == pytest.approx(sizes['base_dense'], rel=0.01)
    assert report['sparsity']['attention linears'] == dict(base=pytest.approx(0.9), merged=0.)
    assert report['sparsity']['MLP linears']['merged'] == report['sparsity']['MLP linears']['base']
    assert [row['batch'] for row in report['latency_ms']] == [1, 2] and report['max_abs_diff'] < 1e-4
    table = (tmp_path / 'sparse_deployment.md').read_text()
    assert '| merged | **dense checkpoint (.pth)** |' in table
    assert report['machine']['cpu'] == machine.describe('cpu')['cpu'] and f'CPU: {report["machine"]["cpu"]}' in table
    assert sorted(p.name for p in tmp_path.iterdir()) == ['sparse_deployment.json', 'sparse_deployment.md']


# ----------------------------------------------------------------------------------- compact storage


def awkward_state_dict():
    g = torch.Generator().manual_seed(0)
    sparse = torch.randn(64, 32, 3, 3, generator=g)
    sparse[torch.rand(sparse.shape, generator=g) < 0.9] = 0.
    sparse.view(-1)[:3] = torch.tensor([-0.0, float('nan'), float('-inf')])
    return {
        'conv.weight': sparse,
        'dense.weight': torch.randn(16, 16, generator=g),
        'half.weight': sparse.half(),
        'bf16.weight': sparse.bfloat16(),
        'double.weight': sparse.double()[:2],
        'attention_bias_idxs': torch.zeros(49, 49, dtype=torch.int64),
        'num_batches_tracked': torch.tensor(0),
        'flags': torch.rand(100, generator=g) < 0.01,
        'empty': torch.zeros(0, 3),
        'odd_length': torch.zeros(13, dtype=torch.uint8),
    }


def assert_bitwise_equal(a, b):
    assert list(a) == list(b)
    for name in a:
        assert (a[name].dtype, a[name].shape) == (b[name].dtype, b[name].shape), name
        assert torch.equal(a[name].contiguous().view(-1).view(torch.uint8), b[name].view(-1).view(torch.uint8)), name


def test_pack_unpack_is_bit_exact(tmp_path):
    state = awkward_state_dict()
    size = write_packed(tmp_path / 'sd.safetensors', state, dict(arch='l1', sparsity=0.9))
    assert size == (tmp_path / 'sd.safetensors').stat().st_size
    restored, meta = read_packed(tmp_path / 'sd.safetensors')
    assert_bitwise_equal(state, restored)
    assert meta == dict(arch='l1', sparsity=0.9)
    with safe_open(str(tmp_path / 'sd.safetensors'), 'pt') as f:
        stored = set(f.keys())
    assert {'values/conv.weight', 'mask/conv.weight', 'mask/attention_bias_idxs', 'dense/dense.weight',
            'dense/empty'} <= stored
    assert 'dense/conv.weight' not in stored


def test_pack_size_is_values_plus_one_bit_per_entry():
    weight = torch.randn(1000, 1000)
    weight[torch.rand(weight.shape) < 0.9] = 0.
    tensors, layout = pack_state_dict({'w': weight})
    assert layout == {'w': dict(shape=[1000, 1000], dtype='float32')}
    assert tensors['values/w'].numel() == weight.count_nonzero()
    assert tensors['mask/w'].numel() == 1000 * 1000 // 8


def corrupt(path, data):
    path.write_bytes(data)
    return path


def test_broken_files_are_refused_with_the_reason(tmp_path):
    good = tmp_path / 'good.safetensors'
    write_packed(good, awkward_state_dict())
    data = good.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], 'little')
    flipped = bytearray(data)
    flipped[header_end + 100] ^= 0xFF
    cases = {
        'does not exist': tmp_path / 'missing.safetensors',
        'truncated or corrupt': corrupt(tmp_path / 'cut.safetensors', data[:-50]),
        'sha256 mismatch': corrupt(tmp_path / 'flipped.safetensors', bytes(flipped)),
    }
    for reason, path in cases.items():
        with pytest.raises(SparseFileError, match=reason):
            read_packed(path)

    save_file({'w': torch.zeros(2)}, str(tmp_path / 'other.safetensors'), metadata=dict(format='something'))
    with pytest.raises(SparseFileError, match="not a petah_mm sparse file .*'something'"):
        read_packed(tmp_path / 'other.safetensors')

    tensors, layout = pack_state_dict({'w': torch.tensor([0., 1., 0., 2.])})
    for version, values in (('1', tensors['values/w']), (FORMAT_VERSION, torch.tensor([1.]))):
        forged = dict(tensors, **{'values/w': values})
        save_file(forged, str(tmp_path / 'forged.safetensors'),
                  metadata=dict(format='petah_mm.sparse', format_version=version, tensors=json.dumps(layout),
                                meta='{}', sha256=tensor_digest(forged.items())))
        with pytest.raises(SparseFileError, match="version '1'" if version == '1' else "tensor 'w'.*do not fit"):
            read_packed(tmp_path / 'forged.safetensors')


class Payload:
    """Unpickling it creates a file: evidence that something ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker, ))


def test_pickles_are_never_unpickled(tmp_path):
    marker = tmp_path / 'unpickled'
    (tmp_path / 'evil.safetensors').write_bytes(pickle.dumps({'w': Payload(marker)}))
    with pytest.raises(SparseFileError, match='not a readable safetensors file'):
        read_packed(tmp_path / 'evil.safetensors')
    assert not marker.exists()


def test_meta_must_be_json(tmp_path):
    with pytest.raises(ValueError, match="metadata 'meta' is not JSON-serializable"):
        write_packed(tmp_path / 'x.safetensors', {'w': torch.zeros(3)}, dict(when=object()))
    assert not list(tmp_path.iterdir())


def test_pack_tool_round_trip(sparse_l1, tmp_path, capsys):
    state, meta, _ = read_checkpoint(sparse_l1)
    training = tmp_path / 'training.pth'
    torch.save(dict(state_dict=state, meta=meta, optimizer=dict(state={})), training)
    main = sparse_pack.main
    main(['pack', str(training), str(tmp_path / 'packed.safetensors')])
    main(['unpack', str(tmp_path / 'packed.safetensors'), str(tmp_path / 'unpacked.pth')])
    printed = capsys.readouterr().out
    assert 'not packed (training state, not weights): optimizer' in printed
    packed_size = (tmp_path / 'packed.safetensors').stat().st_size
    assert packed_size < 0.15 * sparse_l1.stat().st_size
    restored, restored_meta, others = read_checkpoint(tmp_path / 'unpacked.pth')
    assert_bitwise_equal(state, restored)
    assert restored_meta == meta and others == []


def test_write_checkpoint_is_what_read_checkpoint_reads(tmp_path):
    state = {'backbone.w': torch.arange(4.)}
    write_checkpoint(tmp_path / 'c.pth', state, dict(note='x'))
    assert read_checkpoint(tmp_path / 'c.pth')[1] == dict(note='x')
    torch.save(dict(state_dict=dict(w=torch.zeros(1), step=3)), tmp_path / 'bad.pth')
    with pytest.raises(ValueError, match=r"'state_dict' holds non-tensor entries \['step'\]"):
        read_checkpoint(tmp_path / 'bad.pth')


# ------------------------------------------------------------------------------------------ configs

SPARSE_CONFIGS = sorted((REPO / 'configs' / 'sparse').glob('*.py'))
SPARSE_CHECKPOINT = dict(type='Pretrained', checkpoint='checkpoints/ef-l7-sparse90.pth')
#: name prefix of a sparse config -> folder of its dense twin
DENSE_FOLDERS = {'cascade-mask-rcnn_': 'cascade_rcnn', 'fpn_': 'sem_fpn', 'ef-l7-': 'fgvc'}
TABLE_5_METHODS = ('frozen', 'attn-ft', 'full', 'lora-attn-r8', 'petah1', 'petah2')


def dense_twin(path: Path) -> Path:
    name = path.name.replace('-sparse90', '')
    return REPO / 'configs' / next(f for prefix, f in DENSE_FOLDERS.items() if name.startswith(prefix)) / name


@pytest.mark.parametrize('path', SPARSE_CONFIGS, ids=lambda p: p.name)
def test_sparse_config_is_its_dense_twin_on_the_pruned_backbone(path):
    """Same model, data and schedule as the dense config; only the checkpoint and the hook differ."""
    sparse, dense = Config.fromfile(str(path)).to_dict(), Config.fromfile(str(dense_twin(path))).to_dict()
    assert sparse['model']['backbone']['init_cfg'] == SPARSE_CHECKPOINT
    trains_weights = sparse['model']['backbone']['adapter']['method'] in ('full', 'attn_ft')
    assert sparse.pop('custom_hooks', []) == ([dict(type='PreserveSparsityHook')] if trains_weights else [])
    dense['model']['backbone']['init_cfg'] = SPARSE_CHECKPOINT
    assert sparse == dense


def test_every_table_5_method_has_a_sparse_config():
    fgvc = [m.group(1) for p in (REPO / 'configs' / 'fgvc').iterdir()
            if (m := re.fullmatch(r'ef-l7-petah2_(8xb128-\d+e_\w+)\.py', p.name))]
    assert len(fgvc) == 6, fgvc  # CUB, Cars, Pets, Aircraft, DTD, Food-101
    names = {p.name for p in SPARSE_CONFIGS}
    for method in TABLE_5_METHODS:
        expected = {f'cascade-mask-rcnn_ef-l7-sparse90-{method}_fpn_1x_coco.py',
                    f'fpn_ef-l7-sparse90-{method}_8xb4-40k_ade20k-512x512.py'}
        expected |= {f'ef-l7-sparse90-{method}_{suffix}.py' for suffix in fgvc}
        assert expected <= names, sorted(expected - names)
