"""Every family through PETAHBackbone: built by its library's registry, identity at init, merged ==
unmerged, one step trains only what the method says, adapter files, merged exports without petah_mm."""
import json
import sys

import pytest
import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope

from petah_mm.adapters import PRESETS, AdaptedBackboneMixin, adapted_layers, build_plan, is_adapter_key, preset
from petah_mm.adapters.discovery import discover_groups
from petah_mm.deploy.merged import merged_state_dict
from petah_mm.testing import randomise_adapters
from helpers import assert_close_scaled, reduction_length, run_process

SIZE = (64, 96)  # non-square, as dense tasks run
TIMM = dict(type='mmpretrain.TIMMBackbone', features_only=True, pretrained=False)
#: family -> (library scope, smallest inner backbone config, groups PETAH adapts there)
FAMILIES = {
    'swin': ('mmdet', dict(type='mmdet.SwinTransformer', embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 4, 8),
                           window_size=4), {'attn', 'conv'}),
    'resnet50': ('mmdet', dict(type='mmdet.ResNet', depth=50, base_channels=16, zero_init_residual=False), {'conv'}),
    'mobilevit': ('mmpretrain', dict(type='mmpretrain.MobileViT', arch='xx_small', out_indices=(1, 2, 3, 4)),
                  {'attn', 'conv'}),
    'efficientformerv2': ('mmpretrain', dict(TIMM, model_name='efficientformerv2_s0', img_size=SIZE),
                          {'attn', 'conv'}),
    'fastvit': ('mmpretrain', dict(TIMM, model_name='fastvit_sa12'), {'attn', 'conv'}),
    # the real transformer's architecture (DINOv2 ViT-S/14), 2 of its 12 blocks, at a 4x6 patch grid
    'vit-s14': ('mmpretrain', dict(TIMM, model_name='vit_small_patch14_dinov2', img_size=SIZE, depth=2,
                                   out_indices=(0, 1)), {'attn', 'conv'}),
}


def registry(scope):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        from mmpretrain.registry import MODELS
    return MODELS


def build(family, adapter='petah2', inner_kwargs=None, **kwargs):
    scope, inner, _ = FAMILIES[family]
    adapter = preset(adapter) if isinstance(adapter, str) else adapter
    with DefaultScope.overwrite_default_scope(scope):
        model = registry(scope).build(dict(type='PETAHBackbone', backbone=dict(inner, **(inner_kwargs or {})),
                                           adapter=adapter, **kwargs))
    model.init_weights()
    return model


def outputs(model, x):
    out = model(x)
    return list(out) if isinstance(out, (tuple, list)) else [out]


def seeded_input(batch, seed=0):
    return torch.randn(batch, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope='module')
def models():
    """One PETAH-2 model per family, built once: construction dominates these tests."""
    torch.manual_seed(0)
    return {family: build(family).eval() for family in FAMILIES}


@pytest.mark.parametrize('family', FAMILIES)
def test_builds_through_its_library_registry_with_discovered_groups(models, family):
    model = models[family]
    scope, inner, groups = FAMILIES[family]
    with DefaultScope.overwrite_default_scope(scope):
        host = registry(scope).get(inner['type'])
    assert isinstance(model, host) and isinstance(model, AdaptedBackboneMixin)
    assert set(model.adapted_groups) == groups and all(model.adapted_groups.values())
    assert model.target_summary.startswith('discovered: ')
    assert model.norm_eval and all(is_adapter_key(n) for n in model.task_param_names)


@pytest.mark.parametrize('family', FAMILIES)
def test_identity_at_init_then_merged_equals_unmerged(models, family):
    model = models[family]
    x = seeded_input(2)
    plain = build(family, 'frozen').eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not is_adapter_key(k)})
    # up to rounding: inference runs pointwise convs as GEMMs (oneDNN's direct convolution in the plain
    # model), and the unmerged model adds B A x to W x; each sums in another order
    terms = reduction_length(plain)
    with torch.no_grad():
        for a, b in zip(outputs(model, x), outputs(plain, x), strict=True):
            assert_close_scaled(a, b, terms, msg=f'{family} at init vs plain')
        randomise_adapters(model, seed=1, std=0.05)
        unmerged = outputs(model, x)
        assert any(not torch.equal(a, b) for a, b in zip(unmerged, outputs(plain, x)))
        model.merge_adapters()
        merged = outputs(model, x)
        model.unmerge_adapters()
    for a, b in zip(merged, unmerged, strict=True):
        assert_close_scaled(a, b, terms, msg=f'{family} merged vs unmerged')


@pytest.mark.parametrize('family', FAMILIES)
def test_one_step_changes_only_what_petah_trains(family):
    torch.manual_seed(0)
    model = build(family).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optim = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3))
    optim.update_params(sum(o.float().square().mean() for o in outputs(model, seeded_input(2))))
    after = model.state_dict()
    trains = set(model.task_param_names) | set(model.output_norm_param_names())
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= trains, f'frozen tensors changed: {sorted(changed - trains)[:5]}'
    assert {k for k in model.task_param_names if k.endswith('lora_B')} <= changed
    grouped = [name for name, layer in adapted_layers(model).items() if getattr(layer, 'groups', 1) > 1]
    if family not in ('swin', 'resnet50', 'vit-s14'):  # the hybrids' depthwise convs train through the fused path
        assert grouped and all(f'{name}.adapter.lora_B' in changed for name in grouped)


@pytest.mark.parametrize('family', FAMILIES)
def test_adapter_file_round_trip(models, family, tmp_path):
    source = randomise_adapters(models[family], seed=1, std=0.05)
    source.save_adapter(tmp_path / 'a.safetensors')
    target = build(family).eval()
    target.load_state_dict({k: v for k, v in source.state_dict().items() if not is_adapter_key(k)}, strict=False)
    target.load_adapter(tmp_path / 'a.safetensors')
    x = seeded_input(1)
    with torch.no_grad():
        for a, b in zip(outputs(source, x), outputs(target, x), strict=True):
            assert torch.equal(a, b)


# ---------------------------------------------------------------- every method of the paper on the ViT

#: ViT-S/14's linear layers per block (in, out): attention qkv and proj, the MLP's fc1 and fc2; its one conv, the
#: 14x14 patch embedding (3 -> 384), as a matrix (3 * 14 * 14 -> 384). The methods run on 2 of its 12 blocks (the
#: same layers, a sixth of the cost of building and stepping); discovery is checked on all 12.
VIT_DEPTH = FAMILIES['vit-s14'][1]['depth']
VIT_ATTN = [(384, 3 * 384), (384, 384)] * VIT_DEPTH
VIT_MLP = [(384, 4 * 384), (4 * 384, 384)] * VIT_DEPTH
VIT_PATCH = (588, 384)


def lora_params(rank, shapes):
    """A rank-r LoRA trains A (r x in) and B (out x r) per layer."""
    return sum(rank * (fan_in + fan_out) for fan_in, fan_out in shapes)


VIT_PETAH2 = lora_params(8, VIT_ATTN) + lora_params(2, [VIT_PATCH])
#: trainable backbone parameters per preset, from the layer shapes alone; 'full' is every parameter
VIT_TRAINABLE = {
    'frozen': 0,
    'attn-ft': sum(fan_in * fan_out + fan_out for fan_in, fan_out in VIT_ATTN),  # weights and biases
    'lora-attn-r8': lora_params(8, VIT_ATTN),
    'lora-attn-r16': lora_params(16, VIT_ATTN),
    'lora-attn-mlp-r8': lora_params(8, VIT_ATTN + VIT_MLP),
    'petah1': lora_params(8, VIT_ATTN) + lora_params(1, [VIT_PATCH]),
    'petah2': VIT_PETAH2,
    'petah2-dora': VIT_PETAH2 + sum(fan_out for _, fan_out in VIT_ATTN + [VIT_PATCH]),  # + a magnitude per output
}
VIT_GROUPS = {'lora-attn-r8': {'attn'}, 'lora-attn-r16': {'attn'}, 'lora-attn-mlp-r8': {'attn', 'mlp'}}


def test_vit_discovers_attention_mlp_and_the_patch_embedding():
    whole = build('vit-s14', 'frozen', inner_kwargs=dict(depth=12, out_indices=(11, )))  # frozen: no adapter in it
    groups, skipped = discover_groups(whole)
    blocks = [f'timm_model.model.blocks.{i}.' for i in range(12)]
    assert groups == dict(attn=[b + layer for b in blocks for layer in ('attn.qkv', 'attn.proj')],
                          mlp=[b + layer for b in blocks for layer in ('mlp.fc1', 'mlp.fc2')],
                          conv=['timm_model.model.patch_embed.proj'])
    assert not skipped


#: presets whose ranks come from data (petah-budget): a backbone built from the bare preset refuses to guess them
MEASURED_RANKS = [n for n in PRESETS if build_plan(**preset(n)).needs_ranks]


def test_a_preset_whose_ranks_are_measured_refuses_to_build_without_them():
    assert MEASURED_RANKS == ['petah-budget']
    with pytest.raises(ValueError, match=r'adapter.budget=.petah2. .* no adapter.layer_ranks yet: run python '
                                         r'tools/analysis_tools/allocate_ranks.py CONFIG'):
        build('vit-s14', 'petah-budget')


@pytest.mark.parametrize('name', [n for n in PRESETS if n not in MEASURED_RANKS])
def test_every_method_of_the_paper_runs_on_the_vit(name):
    torch.manual_seed(0)
    model = build('vit-s14', name).train()
    trainable = {k for k, p in model.named_parameters() if p.requires_grad}
    total = sum(model.trainable_by_group().values())
    if name == 'full':
        assert total == sum(p.numel() for p in model.parameters())
    elif name in VIT_TRAINABLE:
        assert total == VIT_TRAINABLE[name], (name, total)
    else:  # LoKr: its own parameter count, fewer than LoRA's at the same ranks
        assert 0 < total < VIT_PETAH2
    adapter = preset(name)
    if adapter['method'] in ('lora_attn', 'lora_attn_mlp', 'petah'):
        assert set(model.adapted_groups) == VIT_GROUPS.get(name, {'attn', 'conv'})
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    out = outputs(model, seeded_input(2))
    assert [tuple(o.shape) for o in out] == [(2, 384, 4, 6)] * VIT_DEPTH  # a map per block
    if trainable:
        optim = OptimWrapper(torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3))
        optim.update_params(sum(o.square().mean() for o in out))
    changed = {k for k, p in model.named_parameters() if not torch.equal(before[k], p)}
    assert changed <= trainable and bool(changed) == bool(trainable), sorted(changed - trainable)[:5]


PLAIN_SCRIPT = """
import json, sys, torch
from mmengine.registry import DefaultScope
jobs = json.load(open(sys.argv[1]))
for job in jobs:
    if job['scope'] == 'mmdet':
        import mmdet.models
        from mmdet.registry import MODELS
    else:
        import mmpretrain.models
        from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope(job['scope']):
        model = MODELS.build(job['cfg'])
    model.eval()  # not chained: mmdet's SwinTransformer.train() returns None
    model.load_state_dict(torch.load(job['weights'], weights_only=True), strict=True)
    with torch.no_grad():
        out = model(torch.load(job['input'], weights_only=True))
    torch.save([o for o in (out if isinstance(out, (tuple, list)) else [out])], job['output'])
assert not any(name.startswith('petah_mm') for name in sys.modules), 'petah_mm was imported'
"""


def test_merged_exports_load_into_the_plain_inner_backbones_without_petah_mm(models, tmp_path):
    jobs, expected = [], {}
    x = seeded_input(1)
    for family, model in models.items():
        randomise_adapters(model, seed=2, std=0.05)
        with torch.no_grad():
            expected[family] = outputs(model, x)
        torch.save(merged_state_dict(model, backbone=model), tmp_path / f'{family}.pth')
        jobs.append(dict(scope=FAMILIES[family][0], cfg=model.plain_backbone_config(), input=str(tmp_path / 'x.pt'),
                         weights=str(tmp_path / f'{family}.pth'), output=str(tmp_path / f'{family}.out')))
        assert jobs[-1]['cfg']['type'] == FAMILIES[family][1]['type']
    torch.save(x, tmp_path / 'x.pt')
    (tmp_path / 'jobs.json').write_text(json.dumps(jobs))
    proc = run_process([sys.executable, '-c', PLAIN_SCRIPT, tmp_path / 'jobs.json'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for family, model in models.items():  # merged kernels against the unmerged forms: another summation order
        for a, b in zip(torch.load(tmp_path / f'{family}.out'), expected[family], strict=True):
            assert_close_scaled(a, b, reduction_length(model), msg=family)
