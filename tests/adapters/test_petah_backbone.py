"""PETAHBackbone's contract: discovery, refusals, the inner backbone intact, one truth per setting."""
import copy
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from torch import nn

import petah_mm.adapters.backbone as backbone_module
from petah_mm.adapters import PRESETS, adapted_layers, preset, preset_name
from petah_mm.models import build_backbone_from_config, without_pretrained
from petah_mm.sparse import weight_kinds
from petah_mm.tools.analysis import count_params
from helpers import REPO, assert_close_scaled, reduction_length

RESNET18 = dict(type='mmdet.ResNet', depth=18)


def wrap(inner, adapter='petah2', scope='mmdet', **kwargs):
    with DefaultScope.overwrite_default_scope(scope):
        return MODELS.build(dict(type='PETAHBackbone', backbone=inner, adapter=adapter, **kwargs))


def test_cnn_gets_conv_lora_alone_and_says_so(monkeypatch):
    logs = []
    monkeypatch.setattr(backbone_module, 'print_log', lambda msg, **kwargs: logs.append(msg))
    model = wrap(RESNET18)
    assert set(model.adapted_groups) == {'conv'} and len(model.adapted_groups['conv']) == 20
    assert any('no attention layers' in line and 'conv LoRA alone' in line for line in logs)
    assert any('discovered: conv 20 layers' in line for line in logs)


@pytest.mark.parametrize('name', ['lora-attn-r8', 'attn-ft', 'lora-attn-mlp-r8'])
def test_attention_methods_on_a_cnn_are_refused(name):
    with pytest.raises(KeyError, match="needs the target group 'attn'.*no attention layers"):
        wrap(RESNET18, name)


class FusedAttention(nn.Module):

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1)
        self.mixer = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x):
        x = self.stem(x).flatten(2).transpose(1, 2)
        return self.mixer(x, x, x)[0]


def test_discovery_skips_per_channel_scales_and_counts_them():
    from petah_mm.adapters.discovery import discover_groups
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 1, groups=8), nn.Conv2d(8, 8, 3, groups=8))
    groups, skipped = discover_groups(model)
    assert groups == {'conv': ['0', '2']}
    assert skipped == {'per-channel scale (depthwise 1x1 Conv2d)': 1}


def test_fused_multihead_attention_is_refused_by_name():
    with pytest.raises(TypeError, match=r"\['mixer'\] are nn.MultiheadAttention.*in_proj_weight"):
        wrap(dict(type=FusedAttention), 'lora-attn-r8')
    assert set(wrap(dict(type=FusedAttention), 'full').task_param_names) == {
        n for n, _ in FusedAttention().named_parameters()}


def test_targets_override_discovery_per_group():
    model = wrap(RESNET18, targets=dict(conv=[r'layer4\.\d+\.conv2']))
    assert model.adapted_groups == dict(conv=['layer4.0.conv2', 'layer4.1.conv2'])
    assert 'overridden by the config' in model.target_summary


def test_frozen_stages_norm_eval_and_out_indices_stay_the_inner_backbones():
    model = wrap(dict(RESNET18, frozen_stages=1, norm_eval=False, out_indices=(1, 3))).train()
    assert not model.conv1.adapter.lora_A.requires_grad and not model.layer1[0].conv1.adapter.lora_B.requires_grad
    assert model.layer2[0].conv1.adapter.lora_B.requires_grad
    assert not model.layer1[0].bn1.training and model.layer3[0].bn1.training  # explicit norm_eval=False wins
    assert len(model(torch.randn(1, 3, 64, 96))) == 2
    assert wrap(RESNET18).train().layer3[0].bn1.training is False  # the method's norm_eval


def test_pretrained_weights_load_before_the_adapters_are_zeroed(tmp_path):
    with DefaultScope.overwrite_default_scope('mmdet'):
        plain = MODELS.build(RESNET18)
    plain.eval()  # mmdet's ResNet.train() returns None
    with torch.no_grad():
        for p in plain.parameters():
            p.normal_(0, 0.05)
    torch.save(dict(state_dict=plain.state_dict()), tmp_path / 'r18.pth')
    model = wrap(dict(RESNET18, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'r18.pth'))))
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(model(x), plain(x), strict=True):  # adapted pointwise convs run as GEMMs at inference
            assert_close_scaled(a, b, reduction_length(plain))
    assert all(torch.count_nonzero(layer.adapter.lora_B) == 0 for layer in adapted_layers(model).values())


def test_discovery_finds_exactly_the_layers_efficientformer_used_to_declare(build_ef):
    model = build_ef('lora_attn_mlp')
    meta3d = [re.escape(n) for n, m in model.named_modules() if type(m).__name__ == 'Meta3D']
    declared = dict(attn=[rf'{b}\.token_mixer\.(qkv|proj)' for b in meta3d], mlp=[rf'{b}\.mlp\.fc[12]' for b in meta3d],
                    conv=[re.escape(n) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)])
    names = [n for n, _ in model.named_modules()]
    for group, patterns in declared.items():
        assert model.target_patterns[group] == [re.escape(n) for n in names
                                                if any(re.fullmatch(p, n) for p in patterns)], group


def test_adapter_may_be_a_preset_name():
    assert wrap(RESNET18, 'petah1').adapter_plan.adapters['conv']['rank'] == 1


def summary(model):
    return (type(model).__name__, model.adapter_plan, model.norm_eval, model.adapted_groups,
            sorted(n for n, p in model.named_parameters() if p.requires_grad))


#: the petah2 config every method config inherits from, and the file name pattern of the others
SWITCHED = [
    ('configs/cascade_rcnn/cascade-mask-rcnn_ef-l1-petah2_fpn_1x_coco.py', 'cascade-mask-rcnn_ef-l1-{}_fpn_1x_coco.py'),
    ('configs/sem_fpn/fpn_ef-l1-petah2_8xb4-40k_ade20k-512x512.py', 'fpn_ef-l1-{}_8xb4-40k_ade20k-512x512.py'),
    ('configs/fgvc/ef-l1-petah2_8xb128-200e_dtd.py', 'ef-l1-{}_8xb128-200e_dtd.py'),
    ('configs/cascade_rcnn/cascade-mask-rcnn_swin-t-petah2_fpn_1x_coco.py',
     'cascade-mask-rcnn_swin-t-{}_fpn_1x_coco.py'),
]


@pytest.mark.parametrize('base, pattern', SWITCHED, ids=lambda v: Path(v).parent.name)
def test_shipped_configs_and_the_command_line_switch_give_the_same_model(base, pattern):
    """``--cfg-options model.backbone.adapter.method=X`` (and X's ranks) on the petah2 config."""
    checked, base_cfg = 0, Config.fromfile(REPO / base)
    for name in PRESETS:
        shipped = REPO / Path(base).parent / pattern.format(name)
        if not shipped.exists():
            continue
        options = {f'model.backbone.adapter.{key}': value for key, value in preset(name).items()}
        cfg = copy.deepcopy(base_cfg)
        cfg.merge_from_dict(options)
        switched = build_backbone_from_config(cfg)
        assert summary(build_backbone_from_config(shipped)) == summary(switched), shipped.name
        checked += 1
    assert checked >= 4


def test_output_norms_train_under_every_method(build_ef):
    for method in ('frozen', 'lora_attn', 'petah', 'attn_ft'):
        model = build_ef(method)
        norms = [n for n, _ in model.named_parameters() if re.match(r'norm\d\.', n)]
        assert len(norms) == 8 and all(p.requires_grad for n, p in model.named_parameters() if n in norms), method
        assert not set(norms) & set(model.task_state_dict()), 'output norms belong to the task, not the adapter'


NEW_CONFIGS = sorted(p for folder in ('cascade_rcnn', 'sem_fpn') for p in (REPO / 'configs' / folder).glob('*.py')
                     if not p.name.split('_')[1].startswith('ef-'))


NAME = re.compile('-(?P<preset>' + '|'.join(sorted(PRESETS, key=len, reverse=True)) + ')_')


@pytest.mark.parametrize('path', NEW_CONFIGS, ids=lambda p: p.stem)
def test_every_new_family_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'PETAHBackbone'
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(dict(cfg.model, backbone=without_pretrained(cfg.model.backbone)))
    assert preset_name(model.backbone.adapter_cfg) == NAME.search(path.name)['preset']
    if '-petah2_' in path.name:  # the neck's in_channels fit the backbone's outputs (the variants inherit them)
        model.eval()
        with torch.no_grad():
            model.neck(model.backbone(torch.randn(1, 3, 64, 96)))


def test_sparsity_report_rows_come_from_the_discovered_groups():
    model = wrap(dict(type='mmdet.SwinTransformer', embed_dims=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                      strides=(4, 2), out_indices=(0, 1)), 'frozen')
    kinds = weight_kinds(model)
    assert kinds['stages.0.blocks.0.attn.w_msa.qkv.weight'] == 'attention linears'
    assert kinds['stages.0.blocks.0.ffn.layers.1.weight'] == 'MLP linears'
    assert kinds['stages.0.downsample.reduction.weight'] == 'other linears'
    assert kinds['patch_embed.projection.weight'] == '4x4 convs'


def test_a_merged_export_of_a_wrapped_backbone_needs_no_petah_mm():
    from petah_mm.deploy.merged import needs_petah_mm
    model = wrap(RESNET18)
    assert model.plain_backbone_config() == dict(RESNET18, init_cfg=None)
    assert not needs_petah_mm(model.plain_backbone_config(), 'mmdet')
    assert needs_petah_mm(dict(type='DenseEfficientFormer'), 'mmdet')


def test_count_params_reports_the_discovered_groups():
    report = count_params.report(wrap(RESNET18))
    assert 'targets discovered: conv 20 layers' in report
    assert re.search(r'conv adapters\s+20\s+' + f'{sum(wrap(RESNET18).trainable_by_group().values()):,}', report)
