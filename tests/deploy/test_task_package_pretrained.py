"""Configs written for exported models load no pretrained weights, and never download any.

A wrapped timm backbone downloads its weights when it is *built* (``pretrained=True`` on
``mmpretrain.TIMMBackbone``), not in ``init_weights()``. Every config petah_mm writes for a model whose
weights come from elsewhere (the export tools, a task package's ``config.json``, a merged export's
``.py``) goes through :func:`petah_mm.models.without_pretrained`; here a FastViT-SA12 with
``pretrained=True`` is exported both ways and built back with every download entry point of timm,
torch.hub and huggingface_hub made to raise.
"""
import copy
import importlib
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from petah_mm.deploy import (build_task_model, build_trained_model, export_merged, export_shared_backbone,
                             export_task_package, load_task_package)
from petah_mm.deploy.packages import read_package_config
from petah_mm.models import with_pretrained, without_pretrained

REPO = Path(__file__).resolve().parents[2]
TOY_CLS = REPO / 'configs/toy/ef-l1-petah2_toy-cls.py'
FASTVIT = REPO / 'configs/_base_/models/fastvit-sa12.py'
#: where timm 1.0 and torch.hub fetch weights (modules that import them by name hold their own reference)
DOWNLOADERS = {
    'torch.hub': ('load_state_dict_from_url', 'download_url_to_file'),
    'timm.models._builder': ('load_state_dict_from_url', 'load_state_dict_from_hf', 'download_cached_file',
                             'load_custom_from_hf'),
    'timm.models._hub': ('download_cached_file', 'load_state_dict_from_hf', 'hf_hub_download',
                         'download_url_to_file'),
    'huggingface_hub': ('hf_hub_download', 'snapshot_download'),
    'huggingface_hub.file_download': ('hf_hub_download', ),
}


class DownloadAttempted(AssertionError):
    pass


@pytest.fixture
def no_downloads(monkeypatch):
    """Every download entry point raises DownloadAttempted, naming itself."""
    patched = []
    for module_name, names in DOWNLOADERS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):

                def refuse(*args, _where=f'{module_name}.{name}', **kwargs):
                    raise DownloadAttempted(f'{_where} was called with {args[:1]}: a download was attempted')

                monkeypatch.setattr(module, name, refuse)
                patched.append(f'{module_name}.{name}')
    # timm's builder must be covered, or a renamed entry point would let a download through unseen
    assert any(p.startswith('timm.models._builder.') for p in patched), f'patched only {patched}'
    return patched


def fastvit_classifier() -> Config:
    """The toy classifier with the released FastViT-SA12 backbone config (timm, ``pretrained=True``)."""
    cfg = Config.fromfile(TOY_CLS)
    backbone = dict(Config.fromfile(FASTVIT).fastvit_sa12_petah2)
    backbone['backbone'] = dict(backbone['backbone'], out_indices=(3, ))
    cfg.model.backbone = backbone
    cfg.model.neck = dict(type='GlobalAveragePooling')
    cfg.model.head.in_channels = 512
    return cfg


def trained_fastvit(tmp_path) -> Path:
    """A checkpoint of the classifier with seeded random task tensors (its adapters) standing in for training."""
    cfg = fastvit_classifier()
    cfg.model.backbone = without_pretrained(cfg.model.backbone)
    model = build_task_model(cfg)
    g = torch.Generator().manual_seed(0)
    task = model.backbone.task_state_dict()  # state-dict tensors share the parameters' storage
    assert any('lora' in name for name in task), sorted(task)[:5]
    with torch.no_grad():
        for tensor in task.values():
            tensor.copy_(torch.randn(tensor.shape, generator=g) * 0.05)
    torch.save(dict(state_dict=model.state_dict(), meta={}), tmp_path / 'trained.pth')
    return tmp_path / 'trained.pth'


def test_the_guard_sees_the_download_the_released_config_asks_for(no_downloads):
    """Building the released FastViT config as it is tries to download: this is what the tests below
    would see if an exported config kept ``pretrained=True``."""
    with pytest.raises(DownloadAttempted):
        build_task_model(fastvit_classifier())


def test_task_package_of_a_wrapped_timm_fastvit_builds_without_a_download(tmp_path, no_downloads):
    config = tmp_path / 'fastvit_cls.py'
    fastvit_classifier().dump(config)
    _, model, _ = build_trained_model(config, trained_fastvit(tmp_path))  # export_task.py's first step
    # the training config itself, pretrained=True and all, is what a library user hands to the export
    export_task_package(model, fastvit_classifier(), tmp_path / 'cls')
    export_shared_backbone(model, tmp_path / 'backbone.safetensors')

    _, package_cfg = read_package_config(tmp_path / 'cls')
    inner = package_cfg.model.backbone.backbone
    assert inner.pretrained is False and inner.get('init_cfg') is None, inner
    loaded = load_task_package(tmp_path / 'cls', tmp_path / 'backbone.safetensors')
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, observed = model(x, mode='tensor'), loaded(x, mode='tensor')
    assert torch.equal(observed, expected), f'max |difference| {(observed - expected).abs().max():.3g}, expected 0'


def test_merged_export_of_a_wrapped_timm_fastvit_builds_without_a_download(tmp_path, no_downloads):
    config = tmp_path / 'fastvit_cls.py'
    fastvit_classifier().dump(config)
    cfg, model, _ = build_trained_model(config, trained_fastvit(tmp_path))  # export_merged.py's first step
    # a model trained from the released config (by tools/train.py) remembers its inner config as built,
    # pretrained=True included: the merged config must still not download
    model.backbone.host_cfg['pretrained'] = True
    out = export_merged(model, cfg, tmp_path / 'merged.pth')
    plain_cfg = Config.fromfile(out.with_suffix('.py'))
    assert plain_cfg.model.backbone.type == 'mmpretrain.TIMMBackbone' and plain_cfg.model.backbone.pretrained is False
    build_task_model(plain_cfg)


@pytest.mark.parametrize('backbone, inner_expected', [
    # a wrapped timm backbone: its download switch goes off
    (dict(type='PETAHBackbone', adapter='petah2',
          backbone=dict(type='mmpretrain.TIMMBackbone', model_name='fastvit_sa12', pretrained=True)),
     dict(type='mmpretrain.TIMMBackbone', model_name='fastvit_sa12', pretrained=False, init_cfg=None)),
    # a wrapped backbone with a Pretrained init_cfg (mmdet's Swin)
    (dict(type='PETAHBackbone', adapter='petah2',
          backbone=dict(type='mmdet.SwinTransformer', init_cfg=dict(type='Pretrained', checkpoint='swin.pth'))),
     dict(type='mmdet.SwinTransformer', init_cfg=None)),
    # petah_mm's own EfficientFormer, what the export tools used to handle by hand
    (dict(type='PETAHEfficientFormer', arch='l1', init_cfg=dict(type='Pretrained', checkpoint='ef.pth')),
     None),
    # a plain timm backbone, as a merged export of a wrapped one names it
    (dict(type='mmpretrain.TIMMBackbone', model_name='fastvit_sa12', pretrained=True, init_cfg=None), None),
    # an older backbone whose `pretrained` is a checkpoint path
    (dict(type='mmseg.ResNetV1c', depth=50, pretrained='open-mmlab://resnet50_v1c'), None),
])
def test_without_pretrained_drops_every_source_of_weights(backbone, inner_expected):
    given = copy.deepcopy(backbone)
    out = without_pretrained(backbone)
    assert backbone == given, 'the config given was changed in place'
    owner, given_owner = (out['backbone'], given['backbone']) if out['type'] == 'PETAHBackbone' else (out, given)
    assert owner.get('init_cfg') is None and not owner.get('pretrained') and out.get('init_cfg') is None, out
    if inner_expected is not None:
        assert owner == inner_expected
    kept = ('init_cfg', 'pretrained')
    assert {k: v for k, v in owner.items() if k not in kept} == {k: v for k, v in given_owner.items() if k not in kept}


def test_with_a_checkpoint_the_checkpoint_is_the_only_source():
    backbone = dict(type='PETAHBackbone', adapter='petah2',
                    backbone=dict(type='mmpretrain.TIMMBackbone', model_name='fastvit_sa12', pretrained=True))
    inner = with_pretrained(backbone, 'mine.pth')['backbone']
    assert inner['pretrained'] is False and inner['init_cfg'] == dict(type='Pretrained', checkpoint='mine.pth')
