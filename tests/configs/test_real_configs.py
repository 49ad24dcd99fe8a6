"""configs/real: real ImageNet weights in every config, strictly loaded; the plain classifier classifies the bundled
photos through mmpretrain's own inferencer; on real photos with nonzero adapters PETAH-2 merged equals unmerged,
and the merged export predicts the same in a process without petah_mm."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import load_checkpoint
from PIL import Image

from petah_mm.datasets.real_silhouettes import PHOTOS
from petah_mm.deploy.merged import export_merged
from petah_mm.testing import randomise_adapters
from helpers import REPO, assert_close_scaled, reduction_length, run_process

REAL = REPO / 'configs' / 'real'
IN1K = REAL / 'tf-efficientnet-lite0_in1k.py'
CLS = REAL / 'tf-efficientnet-lite0-petah2_animal-cls-64px.py'
PETAH2 = sorted(p.name for p in REAL.glob('*-petah2_*.py'))
IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def build(path):
    """A config's whole model with its weights loaded by its own ``init_cfg`` (strict for ``pypkg://``)."""
    cfg = Config.fromfile(str(path))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
        model.init_weights()
    return cfg, model.eval()


def photo_batch(model, size):
    """The bundled photos, resized to ``size`` (h, w), through the model's own data preprocessor."""
    images = []
    for name in ('chelsea.png', 'coffee.png'):
        rgb = Image.open(PHOTOS[name].locate()).convert('RGB').resize(size[::-1], Image.Resampling.BICUBIC)
        images.append(torch.from_numpy(np.array(rgb)).permute(2, 0, 1).flip(0))  # BGR, as mmcv loads images
    return model.data_preprocessor(dict(inputs=images), False)['inputs']


@pytest.fixture(scope='module')
def cls_model():
    torch.manual_seed(0)
    return build(CLS)


def test_imagenet_classifier_through_mmpretrains_inferencer():
    from mmengine.registry import DefaultScope
    from mmpretrain.apis import ImageClassificationInferencer

    # the inferencer builds its pipeline in the process's current default scope: a user's fresh process has none
    # (mmpretrain's own registry then), this worker may hold another test's ('mmengine' from a Runner)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        inferencer = ImageClassificationInferencer(str(IN1K), pretrained=True)  # load_from names the weights
        cat, espresso = (inferencer(str(PHOTOS[name].locate()))[0] for name in ('chelsea.png', 'coffee.png'))
    assert cat['pred_label'] in IMAGENET_CATS, cat['pred_class']
    assert espresso['pred_label'] == 967 and espresso['pred_class'] == 'espresso'
    assert espresso['pred_score'] > 0.5


def test_imagenet_classifier_takes_every_key_of_its_load_from():
    cfg = Config.fromfile(str(IN1K))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    load_checkpoint(model, cfg.load_from, strict=True)  # mmengine raises on any missing or unexpected key


@pytest.mark.parametrize('name', PETAH2)
def test_petah2_configs_build_with_their_real_weights_loaded_strictly(name):
    cfg, model = build(REAL / name)  # init_weights raises on a missing or unexpected key
    backbone = model.backbone
    assert type(backbone).__name__ == 'PETAHTIMMBackbone' and backbone.adapter_plan.method == 'petah'
    assert backbone.init_cfg['type'] == 'Pretrained' and backbone.init_cfg['checkpoint'].startswith('pypkg://')
    for method in ('frozen', 'full'):  # the other methods differ by the adapter only
        other = Config.fromfile(str(REAL / name.replace('-petah2_', f'-{method}_')))
        assert other.model.backbone.adapter.method == method
        assert other.model.backbone.backbone == cfg.model.backbone.backbone


def test_petah2_merged_equals_unmerged_on_real_photos(cls_model):
    _, model = cls_model
    x = photo_batch(model, (224, 224))
    with torch.no_grad():
        plain = model(x, mode='tensor')
        randomise_adapters(model.backbone, seed=1, std=0.02)
        unmerged = model(x, mode='tensor')
        assert (unmerged - plain).abs().max() > 1e-3  # the adapters act
        model.backbone.merge_adapters()
        try:
            merged = model(x, mode='tensor')
        finally:
            model.backbone.unmerge_adapters()
    assert_close_scaled(merged, unmerged, reduction_length(model), msg='merged vs unmerged on real photos')


def test_petah2_dense_features_merged_equal_unmerged_on_real_photos():
    _, model = build(REAL / 'fpn_tf-efficientnet-lite0-petah2_animal-silhouettes.py')
    backbone = randomise_adapters(model.backbone, seed=2, std=0.02)
    x = photo_batch(model, (128, 160))
    with torch.no_grad():
        unmerged = backbone(x)
        backbone.merge_adapters()
        merged = backbone(x)
    assert [f.shape[1] for f in merged] == [24, 40, 112, 320]
    for a, b in zip(merged, unmerged, strict=True):
        assert_close_scaled(a, b, reduction_length(backbone), msg='dense features')


VIT_CLS = REAL / 'dinov2-vit-s14-petah2_animal-cls-112px.py'


def test_vit_classifier_with_real_attention_adapters_merges_exactly_on_real_photos():
    """PETAH-2 on DINOv2's attention (24 qkv/proj LoRAs) and patch embedding, at the study's 112 px."""
    _, model = build(VIT_CLS)
    backbone = model.backbone
    assert {group: len(layers) for group, layers in backbone.adapted_groups.items()} == dict(attn=24, conv=1)
    x = photo_batch(model, (112, 112))
    with torch.no_grad():
        plain = model(x, mode='tensor')
        randomise_adapters(backbone, seed=1, std=0.02)
        unmerged = model(x, mode='tensor')
        assert plain.shape == (2, 10) and (unmerged - plain).abs().max() > 1e-3  # the adapters act
        backbone.merge_adapters()
        merged = model(x, mode='tensor')
    assert_close_scaled(merged, unmerged, reduction_length(model), msg='ViT merged vs unmerged on real photos')


def test_vit_dense_backbone_and_simple_pyramid_on_any_input_size():
    """The dense base: an input of no whole number of patches (128x160) is padded to 10x12 patches; the simple
    pyramid makes four maps at strides 3.5, 7, 14 and 28; merged equals unmerged."""
    from mmseg.registry import MODELS as SEG_MODELS
    real = Config.fromfile(str(REAL / '_base_' / 'dinov2-vit-s14.py')).real
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        backbone = MODELS.build(real.dense_backbone)
    backbone.init_weights()
    with DefaultScope.overwrite_default_scope('mmseg'):
        pyramid = SEG_MODELS.build(real.simple_pyramid).eval()
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(0))
    randomise_adapters(backbone.eval(), seed=2, std=0.02)
    with torch.no_grad():
        unmerged = backbone(x)
        maps = pyramid(unmerged)
        backbone.merge_adapters()
        merged = backbone(x)
    assert [tuple(m.shape) for m in unmerged] == [(1, 384, 10, 12)]
    assert [tuple(m.shape[1:]) for m in maps] == [(384, 40, 48), (384, 20, 24), (384, 10, 12), (384, 5, 6)]
    assert [m.shape[1] for m in maps] == real.channels
    assert_close_scaled(merged[0], unmerged[0], reduction_length(backbone), msg='ViT dense features')


PLAIN_SCRIPT = """
import sys
import torch
from mmpretrain.apis import get_model
model = get_model(sys.argv[1], pretrained=True)  # the export's adapter-free config and its load_from
with torch.no_grad():
    torch.save(model(torch.load(sys.argv[2], weights_only=True), mode='tensor'), sys.argv[3])
assert not any(name.startswith('petah_mm') for name in sys.modules), 'petah_mm was imported'
print(type(model.backbone).__name__)
"""


def test_merged_export_predicts_the_same_without_petah_mm(cls_model, tmp_path):
    cfg, model = cls_model
    randomise_adapters(model.backbone, seed=3, std=0.02)
    x = photo_batch(model, (224, 224))
    with torch.no_grad():
        expected = model(x, mode='tensor')
    out = export_merged(model, cfg, tmp_path / 'merged.pth')
    torch.save(x, tmp_path / 'x.pt')
    proc = run_process([sys.executable, '-c', PLAIN_SCRIPT, out.with_suffix('.py'), tmp_path / 'x.pt',
                        tmp_path / 'y.pt'], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == 'TIMMBackbone'  # the plain backbone, not petah_mm's
    actual = torch.load(tmp_path / 'y.pt')
    assert_close_scaled(actual, expected, reduction_length(model), msg='merged export without petah_mm')
    assert Path(out).stat().st_size < 30e6
