"""Convert EfficientFormer (v1) checkpoints to mmpretrain's key layout, which petah_mm uses.

Three layouts exist in the wild:

* mmpretrain: ``patch_embed.0.conv``, ``network.S.B``, ``ls1.weight``, ``norm3``;
* timm (``efficientformer_l1/l3/l7``): ``stem.conv1``, ``stages.S.downsample``,
  ``stages.S.blocks.B``, ``ls1.gamma``, ``norm``;
* the original snap-research release: ``patch_embed.{0,1,3,4}``, ``network.K`` (stages and
  downsamples interleaved), ``layer_scale_1``, ``norm``, ``dist_head``.

The original layout goes through timm's own ``checkpoint_filter_fn`` first, so only the
timm → mmpretrain map is written here.
"""
import re
from typing import Dict

import torch

StateDict = Dict[str, torch.Tensor]

#: the classification heads of each layout; a backbone never loads them
HEAD_PREFIXES = ('head.', 'head_dist.', 'dist_head.')

_TIMM_STEM = {
    'stem.conv1.': 'patch_embed.0.conv.',
    'stem.norm1.': 'patch_embed.0.bn.',
    'stem.conv2.': 'patch_embed.1.conv.',
    'stem.norm2.': 'patch_embed.1.bn.',
}


def detect_layout(state_dict: StateDict) -> str:
    if 'patch_embed.0.conv.weight' in state_dict:
        return 'mmpretrain'
    if 'stem.conv1.weight' in state_dict:
        return 'timm'
    if 'patch_embed.0.weight' in state_dict:
        return 'original'
    raise KeyError('unrecognised EfficientFormer checkpoint layout: none of patch_embed.0.conv.weight '
                   '(mmpretrain), stem.conv1.weight (timm) or patch_embed.0.weight (snap-research) is '
                   f'present; first keys are {list(state_dict)[:5]}')


def _timm_key_to_mmpretrain(key: str) -> str:
    for old, new in _TIMM_STEM.items():
        if key.startswith(old):
            return new + key[len(old):]
    if key.startswith('norm.'):
        return 'norm3.' + key[len('norm.'):]
    # mmpretrain puts a stage's downsample conv first in network.S, before its blocks.
    key = re.sub(r'^stages\.(\d+)\.downsample\.conv\.', r'network.\1.0.conv.', key)
    key = re.sub(r'^stages\.(\d+)\.downsample\.norm\.', r'network.\1.0.bn.', key)
    key = re.sub(r'^stages\.0\.blocks\.(\d+)\.', r'network.0.\1.', key)
    key = re.sub(r'^stages\.([1-9]\d*)\.blocks\.(\d+)\.',
                 lambda m: f'network.{m.group(1)}.{int(m.group(2)) + 1}.', key)
    return re.sub(r'\.ls([12])\.gamma$', r'.ls\1.weight', key)


def timm_to_mmpretrain(state_dict: StateDict) -> StateDict:
    return {_timm_key_to_mmpretrain(k): v for k, v in state_dict.items() if not k.startswith(HEAD_PREFIXES)}


def original_to_mmpretrain(state_dict: StateDict) -> StateDict:
    from timm.models.efficientformer import checkpoint_filter_fn
    return timm_to_mmpretrain(checkpoint_filter_fn(state_dict, None))


def to_mmpretrain_layout(state_dict: StateDict) -> StateDict:
    """Any of the three layouts → mmpretrain's, without classification heads."""
    layout = detect_layout(state_dict)
    if layout == 'timm':
        return timm_to_mmpretrain(state_dict)
    if layout == 'original':
        return original_to_mmpretrain(state_dict)
    return {k: v for k, v in state_dict.items() if not k.startswith(HEAD_PREFIXES)}
