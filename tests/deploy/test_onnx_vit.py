"""The real transformer to ONNX: PETAH-2 tasks on DINOv2 ViT-S/14 (the installed ``pypkg://dinov2-vit-s14``
weights, seeded random adapters) export merged, fp32 and int8, with the op histogram of the plain ViT's graph, and
``--verify`` holds; the dense ViT (position embedding resampled per input, simple pyramid of fractional strides)
exports at a small size with its position embedding fixed to that size's grid."""
import contextlib
import io

import pytest
import timm
import torch
from mmengine.config import Config

from petah_mm.datasets import make_animal_classification, make_animal_silhouettes
from petah_mm.deploy.onnx.export import onnx_bytes
from petah_mm.deploy.onnx.plain import compare_ops, op_histogram
from petah_mm.deploy.onnx.position_grid import fixed_position_grid
from petah_mm.deploy.packages import build_task_model
from petah_mm.testing import randomise_adapters
from petah_mm.tools.deployment import export_onnx as export_tool
from helpers import REPO

REAL = REPO / 'configs' / 'real'
VIT_CLS = REAL / 'dinov2-vit-s14-petah2_animal-cls-112px.py'
VIT_SEG = REAL / 'fpn_dinov2-vit-s14-petah2_simple-fpn_animal-silhouettes.py'
#: the dense task at 64 px: not a whole number of 14-px patches (padded to 5x5), pyramid maps of 20, 10, 5, 2
SEG_PIPELINE = ("[dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True), "
                "dict(type='LoadAnnotations', reduce_zero_label=False), dict(type='PackSegInputs')]")


def trained_like(base, root, data_root, name: str, extra: str = ''):
    """``(config, checkpoint)``: ``base`` reading ``data_root``, on the installed ViT weights with seeded random
    adapters (a fresh adapter is the identity and would hide a wrong merge)."""
    loaders = '\n'.join(f'{split}_dataloader = dict(dataset=dict(data_root={str(data_root) + "/"!r}{extra}))'
                        for split in ('train', 'val', 'test'))
    config = root / f'{name}.py'
    config.write_text(f'_base_ = {str(base)!r}\n{loaders}\n')
    model = build_task_model(Config.fromfile(config))
    model.init_weights()
    randomise_adapters(model, seed=0)
    torch.save(dict(state_dict=model.state_dict()), root / f'{name}.pth')
    return config, root / f'{name}.pth'


def cli(*args) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = export_tool.main([str(a) for a in args])
    assert code == 0, printed.getvalue()
    return printed.getvalue()


@pytest.fixture(scope='module')
def classifier(tmp_path_factory):
    """``export_onnx.py --int8 --verify --compare-plain`` on the ViT classifier at 112 px: (graph, printed)."""
    root = tmp_path_factory.mktemp('onnx_vit_cls')
    data = make_animal_classification(root / 'data', num_train_per_class=1, num_val_per_class=1,
                                      num_test_per_class=1)['root']
    config, checkpoint = trained_like(VIT_CLS, root, data, 'vit_cls')
    out = root / 'vit_cls.onnx'
    return out, cli(config, checkpoint, out, '--int8', '--calib-images', 2, '--verify', '--verify-images', 2,
                    '--compare-plain')


@pytest.mark.slow
def test_merged_vit_classifier_is_the_plain_vits_graph_fp32_and_int8(classifier):
    out, printed = classifier
    assert "input 'input' (N, 3, 112, 112), dynamic batch" in printed, printed
    assert 'verification passed' in printed and printed.count('ok   image') == 2, printed
    assert "ok   fp32 graph vit_cls.onnx: the plain model's op histogram" in printed, printed
    assert "ok   int8 graph vit_cls.int8.onnx: the plain model's op histogram" in printed, printed
    assert 'op comparison passed' in printed, printed
    int8 = out.with_name('vit_cls.int8.onnx')
    assert {'QuantizeLinear', 'DequantizeLinear'} <= set(op_histogram(int8)), op_histogram(int8)
    assert int8.stat().st_size < out.stat().st_size / 3, (int8.stat().st_size, out.stat().st_size)


@pytest.mark.slow
def test_merged_dense_vit_segmentor_is_the_plain_vits_graph(tmp_path):
    """The simple pyramid's fractional strides and the per-input position embedding, exported at 64 px."""
    data = make_animal_silhouettes(tmp_path / 'data', num_train=1, num_val=1, image_size=(64, 64))['root']
    config, checkpoint = trained_like(VIT_SEG, tmp_path, data, 'vit_seg', f', pipeline={SEG_PIPELINE}')
    printed = cli(config, checkpoint, tmp_path / 'vit_seg.onnx', '--verify', '--verify-images', 1, '--compare-plain')
    assert "input 'input' (N, 3, 64, 64)" in printed and 'verification passed' in printed, printed
    assert "ok   fp32 graph vit_seg.onnx: the plain model's op histogram" in printed, printed


def test_compare_ops_names_the_ops_that_differ(tmp_path):
    """The op comparison can fail: a graph with one more op than its reference."""
    plain, other = tmp_path / 'plain.onnx', tmp_path / 'other.onnx'
    plain.write_bytes(onnx_bytes(torch.nn.Linear(4, 2), torch.zeros(1, 4), ['y'], dynamic_batch=False))
    other.write_bytes(onnx_bytes(torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.ReLU()), torch.zeros(1, 4),
                                 ['y'], dynamic_batch=False))
    line, equal = compare_ops('fp32 graph other.onnx', other, plain)
    assert not equal and "only in the PETAH graph {'Relu': 1}" in line, line
    assert compare_ops('fp32 graph plain.onnx', plain, plain)[1]


def test_fixed_position_grid_is_the_embedding_the_forward_resamples():
    """Exported at one size, a dynamic-size timm ViT adds the embedding its forward resamples for that size (timm's
    antialiased bicubic resampling has no ONNX op); the ViT is given back its own parameter afterwards."""
    vit = timm.create_model('vit_small_patch14_dinov2', pretrained=False, img_size=28, depth=1,
                            dynamic_img_size=True, dynamic_img_pad=True).eval()
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))  # padded to 3x3 patches
    original = vit.pos_embed
    with torch.no_grad():
        expected = vit(x)
        with pytest.raises(torch.onnx.errors.UnsupportedOperatorError, match='bicubic'):
            onnx_bytes(vit, x, ['y'], dynamic_batch=False)
        with fixed_position_grid(vit, (40, 40)):
            assert vit.pos_embed.shape == (1, 1 + 3 * 3, 384)
            assert torch.equal(vit(x), expected)
            onnx_bytes(vit, x, ['y'], dynamic_batch=False)
    assert vit.pos_embed is original and tuple(vit.patch_embed.grid_size) == (2, 2)
