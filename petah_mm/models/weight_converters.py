"""Key maps from foreign checkpoint layouts onto timm's EfficientNet-family modules.

Pure functions, one per source layout (as timm's ``checkpoint_filter_fn``): a state dict in, the
same tensors under timm's names out. Both sources number their inverted-residual blocks flat
(``_blocks.N``, ``features.N``); timm groups them by stage (``blocks.S.I``), so the N-th flat block is
the N-th ``blocks.S.I`` in stage order, given the stage depths. A key that neither map knows is an
error, never dropped: the caller asserts zero missing and zero unexpected keys on the target.
"""
import re
from typing import Dict, List, Mapping, Sequence

import torch


def stage_block_names(depths: Sequence[int]) -> List[str]:
    """``blocks.S.I`` for every block, in timm's order: ``depths`` blocks per stage."""
    return [f'blocks.{stage}.{index}' for stage, depth in enumerate(depths) for index in range(depth)]


def _rename(source: Mapping[str, torch.Tensor], depths: Sequence[int], top: Dict[str, str], block: re.Pattern,
            first_map: Dict[str, str], expand_map: Dict[str, str], expand_marker: str) -> Dict[str, torch.Tensor]:
    """The shared walk: top-level modules by ``top``; block ``N`` (``block`` captures N and the rest) by
    ``expand_map`` if it has an expand conv (``expand_marker`` under it), else by ``first_map``."""
    names = stage_block_names(depths)
    out = {}
    for key, tensor in source.items():
        found = block.fullmatch(key)
        if found:
            index, module, param = int(found['index']), found['module'], found['param']
            if index >= len(names):
                raise KeyError(f'{key}: block {index} beyond the {len(names)} blocks of stage depths {tuple(depths)}')
            has_expand = f'{found["prefix"]}{index}.{expand_marker}' in source
            mapping = expand_map if has_expand else first_map
            if module not in mapping:
                raise KeyError(f'{key}: no timm name for {module!r} in a block '
                               f'{"with" if has_expand else "without"} an expand conv')
            out[f'{names[index]}.{mapping[module]}.{param}'] = tensor
            continue
        module, _, param = key.rpartition('.')
        if module not in top:
            raise KeyError(f'{key}: not a key of this layout (known top-level modules: {sorted(top)})')
        out[f'{top[module]}.{param}'] = tensor
    return out


def efficientnet_pytorch_to_timm(source: Mapping[str, torch.Tensor], depths: Sequence[int]) -> Dict[str, torch.Tensor]:
    """``efficientnet_pytorch`` names (``_conv_stem``, ``_blocks.N._expand_conv`` ...) onto timm's
    EfficientNet (``tf_efficientnet_lite0`` and kin)."""
    return _rename(
        source, depths,
        top={'_conv_stem': 'conv_stem', '_bn0': 'bn1', '_conv_head': 'conv_head', '_bn1': 'bn2', '_fc': 'classifier'},
        block=re.compile(r'(?P<prefix>_blocks\.)(?P<index>\d+)\.(?P<module>\w+)\.(?P<param>\w+)'),
        first_map={'_depthwise_conv': 'conv_dw', '_bn1': 'bn1', '_project_conv': 'conv_pw', '_bn2': 'bn2'},
        expand_map={'_expand_conv': 'conv_pw', '_bn0': 'bn1', '_depthwise_conv': 'conv_dw', '_bn1': 'bn2',
                    '_project_conv': 'conv_pwl', '_bn2': 'bn3'},
        expand_marker='_expand_conv.weight')


def torchvision_mobilenet_v2_to_timm(source: Mapping[str, torch.Tensor],
                                     depths: Sequence[int]) -> Dict[str, torch.Tensor]:
    """torchvision's ``mobilenet_v2`` names (``features.N.conv.M``) onto timm's ``mobilenetv2_100``.

    ``features.0`` is the stem, ``features.1`` to ``features.{len}`` the flat blocks, the last one the head conv.
    """
    blocks = sum(depths)
    renumbered = {}
    for key, tensor in source.items():
        found = re.fullmatch(r'features\.(\d+)\.(.+)', key)
        if found and 1 <= int(found[1]) <= blocks:  # the blocks: numbered from 0 like efficientnet_pytorch's
            key = f'block.{int(found[1]) - 1}.{found[2]}'
        renumbered[key] = tensor
    return _rename(
        renumbered, depths,
        top={'features.0.0': 'conv_stem', 'features.0.1': 'bn1', f'features.{blocks + 1}.0': 'conv_head',
             f'features.{blocks + 1}.1': 'bn2', 'classifier.1': 'classifier'},
        block=re.compile(r'(?P<prefix>block\.)(?P<index>\d+)\.(?P<module>conv\.\d+(?:\.\d+)?)\.(?P<param>\w+)'),
        first_map={'conv.0.0': 'conv_dw', 'conv.0.1': 'bn1', 'conv.1': 'conv_pw', 'conv.2': 'bn2'},
        expand_map={'conv.0.0': 'conv_pw', 'conv.0.1': 'bn1', 'conv.1.0': 'conv_dw', 'conv.1.1': 'bn2',
                    'conv.2': 'conv_pwl', 'conv.3': 'bn3'},
        expand_marker='conv.3.weight')
