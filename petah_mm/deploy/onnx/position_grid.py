"""A timm ViT of dynamic image size, exported at one size: its position embedding as a constant of that grid.

timm's ``dynamic_img_size`` ViT (petah_mm's dense DINOv2 base) resamples its position embedding to the token grid
of every input (bicubic with antialiasing, ``resample_abs_pos_embed``), and the TorchScript exporter has no ONNX
op for antialiased bicubic resizing. An exported graph accepts one (H, W) only, so the resampled embedding is a
constant of the graph: :func:`fixed_position_grid` computes it in PyTorch, with timm's own function on the very
tensors the forward would use, and installs it as the ViT's embedding for that grid; timm's forward then takes its
no-resampling path, and the graph adds the constant. The model is restored afterwards (the original parameter
object, which a multi-task model may share between tasks).
"""
from contextlib import ExitStack, contextmanager
from typing import Iterator, Tuple

import torch
from torch import nn


def dynamic_vits(model: nn.Module) -> Iterator[nn.Module]:
    """The timm ViTs in ``model`` that resample their position embedding per input."""
    for module in model.modules():
        if getattr(module, 'dynamic_img_size', False) and getattr(module, 'pos_embed', None) is not None \
                and hasattr(module, 'patch_embed'):
            yield module


@contextmanager
def _grid_of(vit: nn.Module, shape: Tuple[int, int]):
    from timm.layers import resample_abs_pos_embed
    patch_embed = vit.patch_embed
    grid = tuple(patch_embed.dynamic_feat_size(tuple(shape)))
    original, original_grid = vit.pos_embed, patch_embed.grid_size
    with torch.no_grad():
        resampled = resample_abs_pos_embed(original, new_size=grid, old_size=original_grid,
                                           num_prefix_tokens=0 if vit.no_embed_class else vit.num_prefix_tokens)
    vit.pos_embed, patch_embed.grid_size = nn.Parameter(resampled, requires_grad=False), grid
    try:
        yield
    finally:
        vit.pos_embed, patch_embed.grid_size = original, original_grid


@contextmanager
def fixed_position_grid(model: nn.Module, shape: Tuple[int, int]):
    """``model`` with each dynamic-size timm ViT's position embedding fixed to the grid of (H, W) ``shape``."""
    with ExitStack() as stack:
        for vit in list(dynamic_vits(model)):
            stack.enter_context(_grid_of(vit, shape))
        yield model
