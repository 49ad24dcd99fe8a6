"""Bad settings and inputs are refused up front, naming the value and the valid range (issue: clear errors)."""
import pytest
import torch

from petah_mm.adapters import build_plan
from petah_mm.models import DenseEfficientFormer, PETAHEfficientFormer


def test_frozen_stages_out_of_range():
    with pytest.raises(ValueError, match=r'frozen_stages=7 must lie in \[-1, 4\]'):
        DenseEfficientFormer(arch='l1', frozen_stages=7)


@pytest.fixture(scope='module')
def backbone():
    return PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', conv_rank=2)).eval()


def test_empty_batch(backbone):
    with pytest.raises(ValueError, match=r'non-empty \(N, C, H, W\) batch, got shape \(0, 3, 64, 64\)'):
        backbone(torch.zeros(0, 3, 64, 64))


@pytest.mark.parametrize('size, nearest', [(225, 224), (200, 192), (48, 64)])
def test_input_sizes_that_cannot_run_are_refused_with_the_nearest_valid_size(backbone, size, nearest):
    calls = []
    handle = backbone.patch_embed.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=f'input height {size} cannot run.*multiples of 32.*to {nearest}'):
            backbone(torch.zeros(1, 3, size, 64))
    finally:
        handle.remove()
    assert not calls, 'refused only after compute started'


def test_sizes_that_can_run_still_run(backbone):
    with torch.no_grad():
        for height, width in ((64, 96), (120, 64)):  # 120: ceil(120 / 16) = 8 is even
            assert backbone(torch.zeros(1, 3, height, width))[-1].shape[-2:] == (height // 32 + (height % 32 > 0),
                                                                                 width // 32 + (width % 32 > 0))


def test_classification_trunk_has_no_grid_rule():
    trunk = DenseEfficientFormer(arch='l1', out_indices=[3], reshape_last_feat=False).eval()
    with torch.no_grad():
        assert trunk(torch.zeros(1, 3, 72, 72))[0].shape[:2] == (1, 448)


def test_conv_rank_larger_than_the_conv_allows():
    with pytest.raises(ValueError, match=r"cannot adapt module 'patch_embed.0.conv': adapter rank 40 exceeds .*"
                       r"choose a rank in \[1, 24\]"):
        PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', conv_rank=40))


@pytest.mark.parametrize('alpha', [0, -1.])
def test_alpha_must_be_positive(alpha):
    with pytest.raises(ValueError, match=f'adapter.alpha must be positive .*{alpha!r}'):
        build_plan('petah', conv_rank=2, alpha=alpha)


@pytest.mark.parametrize('dropout', [-0.1, 1.0])
def test_dropout_must_lie_in_0_1(dropout):
    with pytest.raises(ValueError, match=rf'adapter.dropout must lie in \[0, 1\), got {dropout!r}'):
        build_plan('lora_attn', dropout=dropout)
