"""``pypkg://`` checkpoints: found in the installed package, sha256-checked, read by the one weights-only loader,
and loaded strictly (zero missing, zero unexpected keys) by ``init_cfg=dict(type='Pretrained')``."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader
from mmpretrain.registry import MODELS

import petah_mm.engine.package_weights as package_weights
from petah_mm.adapters import adapted_layers, is_adapter_key
from petah_mm.engine import register_checkpoint_loaders
from petah_mm.engine.checkpoint import CheckpointRefusedError
from petah_mm.engine.package_weights import PackagedWeightsError, timm_state_dict
from helpers import REPO


def adapted_lite0(checkpoint, features_only=True, prefix='backbone.'):
    """A PETAH-2 EfficientNet-Lite0 (feature maps, or the trunk) whose inner backbone loads ``checkpoint``."""
    inner = dict(type='mmpretrain.TIMMBackbone', model_name='tf_efficientnet_lite0', features_only=features_only,
                 init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix=prefix))
    if features_only:
        inner['out_indices'] = (1, 2, 3, 4)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(type='PETAHBackbone', backbone=inner, adapter='petah2'))


def test_the_scheme_survives_a_second_registration():
    register_checkpoint_loaders()  # what importing petah_mm again, or another tool, does
    assert CheckpointLoader._get_checkpoint_loader('pypkg://mobilenet-v2') is package_weights.load_from_package


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg', 'mmpretrain', None])
def test_every_library_builds_the_strict_pretrained_init(scope):
    from mmengine.model.weight_init import _initialize  # how BaseModule.init_weights builds an init_cfg
    calls = []
    with DefaultScope.overwrite_default_scope(scope), pytest.MonkeyPatch.context() as patch:
        patch.setattr(package_weights.StrictPackagePretrainedInit, '__call__', lambda self, module: calls.append(1))
        _initialize(torch.nn.Linear(1, 1), dict(type='Pretrained', checkpoint='pypkg://mobilenet-v2'))
    assert calls == [1]


def test_loads_through_the_one_weights_only_loader(monkeypatch):
    calls, loader = [], package_weights.load_checkpoint_file  # what PackagedWeights.load calls

    def spy(path, map_location=None, pinned_sha256=None):
        calls.append(path)
        assert pinned_sha256 == package_weights.PACKAGED_WEIGHTS['mobilenet-v2'].file.sha256
        return loader(path, map_location, pinned_sha256)

    monkeypatch.setattr(package_weights, 'load_checkpoint_file', spy)
    checkpoint = CheckpointLoader.load_checkpoint('pypkg://mobilenet-v2')
    assert [p.name for p in calls] == ['mobilenet_v2-b0353104.pth']
    state = checkpoint['state_dict']
    assert 'head.fc.weight' in state and 'backbone.timm_model.conv_stem.weight' in state
    assert checkpoint['meta']['sha256'].startswith('b0353104') and checkpoint['meta']['licence'] == 'MIT'


def test_pre_1_6_format_loads_only_with_its_pinned_digest(tmp_path):
    """torchvision's MobileNetV2 file is in torch's pre-1.6 format, which cannot be bounded before unpickling:
    only the pinned bytes are accepted, a copy of them without the pin is refused, and so is any other digest."""
    entry = package_weights.PACKAGED_WEIGHTS['mobilenet-v2'].file
    copy = tmp_path / 'mobilenet_v2.pth'
    copy.write_bytes(entry.locate().read_bytes())
    assert 'features.0.0.weight' in package_weights.load_checkpoint_file(copy, 'cpu', pinned_sha256=entry.sha256)
    with pytest.raises(CheckpointRefusedError, match="pre-1.6"):
        package_weights.load_checkpoint_file(copy, 'cpu')
    with pytest.raises(CheckpointRefusedError, match='is not the pinned'):
        package_weights.load_checkpoint_file(copy, 'cpu', pinned_sha256='0' * 64)


@pytest.mark.parametrize('bad, match', [('pypkg://resnet50', 'known: pypkg://efficientnet-lite0'),
                                        ('pypkg://mobilenet-v2/trunk', 'unknown variant')])
def test_unknown_names_and_variants_say_what_exists(bad, match):
    with pytest.raises(KeyError, match=match):
        CheckpointLoader.load_checkpoint(bad)


def test_a_wrong_layout_is_refused_not_half_loaded():
    with pytest.raises(PackagedWeightsError, match=r'0 missing keys .*unexpected.*conv_head.*/features'):
        adapted_lite0('pypkg://efficientnet-lite0').init_weights()  # a whole trunk's weights into feature maps
    with pytest.raises(PackagedWeightsError, match='missing keys'):
        adapted_lite0('pypkg://efficientnet-lite0/features', prefix=None).init_weights()  # keys keep backbone.


@pytest.mark.parametrize('key', ['backbone', 'dense_backbone'])
@pytest.mark.parametrize('base, name', [('tf-efficientnet-lite0', 'efficientnet-lite0'),
                                        ('mobilenetv2-100', 'mobilenet-v2')])
def test_config_backbones_load_every_weight_then_zero_their_adapters(base, name, key):
    cfg = Config.fromfile(str(REPO / 'configs' / 'real' / '_base_' / f'{base}.py')).real[key]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    model.init_weights()  # strict: raises on any missing (adapters aside) or unexpected key
    expected = timm_state_dict(name, 'features' if key == 'dense_backbone' else '')
    expected = {k: v for k, v in expected.items() if not k.startswith('classifier.')}  # the head's, not the trunk's
    own = {k[len('timm_model.'):]: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
    assert own.keys() == expected.keys() and all(torch.equal(own[k], expected[k]) for k in own)
    assert all(not layer.adapter.delta_weight(layer.weight).any() for layer in adapted_layers(model).values())
