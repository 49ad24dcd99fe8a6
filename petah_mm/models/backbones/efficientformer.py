"""EfficientFormer (v1) L1/L3/L7 for any input size, built on mmpretrain's implementation.

mmpretrain's ``EfficientFormer`` indexes a fixed 7×7 attention-bias table, so it only runs on
224×224 inputs. Detection and segmentation need other sizes; here the Meta3D attention
resizes the pretrained table bicubically to the token grid (exactly the table at 7×7), and the
backbone adds what dense tasks expect: ``norm_eval``, gradient checkpointing and pretrained
weights in the mmpretrain, timm or snap-research layout. The Meta4D pooling token mixer runs as a
depthwise box filter on the CPU (:mod:`.box_pooling`), faster than torch's pooling kernel.
"""
import itertools
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.registry import MODELS
from mmengine.runner import CheckpointLoader
from mmpretrain.models.backbones.efficientformer import AttentionWithBias, EfficientFormer, Meta3D
from torch import nn

from ...utils import NormEvalMixin
from .box_pooling import convert_pooling_token_mixers
from .efficientformer_layouts import to_mmpretrain_layout

#: buffers that are recomputed or bookkeeping; a checkpoint may omit them
DERIVED_BUFFERS = ('attention_bias_idxs', 'num_batches_tracked')


class ResizableAttentionWithBias(AttentionWithBias):
    """Attention whose relative-position bias follows the token grid it is given.

    The table holds one bias per head for each offset (|dy|, |dx|) on a ``resolution``² grid.
    For another H×W grid it is resized bicubically to H×W (as the EfficientFormer dense-task
    code does) and indexed by the new offsets. ``token_grid`` is set by the backbone before the
    last stage, because a flattened (B, N, C) input no longer knows its height and width.
    """

    def __init__(self, embed_dims: int, resolution: int = 7, **kwargs):
        super().__init__(embed_dims, resolution=resolution, **kwargs)
        self.resolution = resolution
        self.token_grid = (resolution, resolution)
        self._eval_bias_cache: Dict[Tuple[int, int], torch.Tensor] = {}

    def train(self, mode: bool = True):
        # Skip AttentionWithBias.train: its cached bias only exists for the 7×7 grid.
        self._eval_bias_cache.clear()
        return nn.Module.train(self, mode)

    def _apply(self, fn, *args, **kwargs):
        self._eval_bias_cache.clear()
        return super()._apply(fn, *args, **kwargs)

    def attention_bias(self) -> torch.Tensor:
        """(heads, N, N) bias for the current token grid."""
        if self.token_grid == (self.resolution, self.resolution):
            return self.attention_biases[:, self.attention_bias_idxs]
        height, width = self.token_grid
        table = self.attention_biases.reshape(1, self.num_heads, self.resolution, self.resolution)
        table = F.interpolate(table, size=(height, width), mode='bicubic', align_corners=False)
        return table.reshape(self.num_heads, -1)[:, relative_offset_index(height, width, table.device)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            bias = self.attention_bias()
        else:
            bias = self._eval_bias_cache.get(self.token_grid)
            if bias is None:
                bias = self._eval_bias_cache[self.token_grid] = self.attention_bias().detach()
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=-1)
        attn = ((q @ k.transpose(-2, -1)) * self.scale + bias).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, self.dh))


def relative_offset_index(height: int, width: int, device=None) -> torch.Tensor:
    """(N, N) index |dy|·W + |dx| of every token pair on a row-major H×W grid."""
    points = torch.tensor(list(itertools.product(range(height), range(width))), device=device)
    offsets = (points[:, None, :] - points[None, :, :]).abs()
    return offsets[..., 0] * width + offsets[..., 1]


class CheckpointedStage(nn.Sequential):
    """A stage that can recompute its blocks in backward instead of storing their activations."""

    with_cp = False

    def forward(self, x):
        for block in self:
            if self.with_cp and self.training and x.requires_grad:
                x = cp.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


@MODELS.register_module()
class DenseEfficientFormer(NormEvalMixin, EfficientFormer):
    """EfficientFormer L1/L3/L7 returning NCHW features at strides 4/8/16/32 for any input size.

    Args:
        arch: 'l1', 'l3' or 'l7' (mmpretrain's and the paper's settings), or a dict.
        out_indices: stages to return (0–3). Defaults to all four, NCHW.
        reshape_last_feat: return the last stage as NCHW (dense tasks). With ``False`` and
            ``out_indices=[3]`` the backbone is the classification trunk, returning (B, C, N)
            after the pretrained LayerNorm, like mmpretrain's.
        frozen_stages: freeze the stem and the first ``frozen_stages`` stages entirely.
        norm_eval: keep BatchNorm layers in eval mode while training.
        with_cp: gradient checkpointing of every block, trading compute for memory.
        init_cfg: ``dict(type='Pretrained', checkpoint=..., prefix=None)`` loads any of the
            three checkpoint layouts; other init configs behave as in mmengine.
    """

    strides = (4, 8, 16, 32)

    def __init__(self,
                 arch='l1',
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 reshape_last_feat: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs):
        if isinstance(arch, str) and arch not in self.arch_settings:
            raise ValueError(f'unknown EfficientFormer arch {arch!r}; choose one of '
                             f'{sorted(self.arch_settings)} or pass a dict')
        out_indices = [out_indices] if isinstance(out_indices, int) else list(out_indices)
        if not all(-4 <= i <= 3 for i in out_indices):
            raise ValueError(f'out_indices {out_indices} must lie in [-4, 3] (four stages)')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages={frozen_stages} must lie in [-1, 4]: -1 freezes nothing, 0 the stem, '
                             'n the stem and the first n of the four stages')
        super().__init__(arch=arch, out_indices=out_indices, reshape_last_feat=reshape_last_feat,
                         frozen_stages=frozen_stages, init_cfg=init_cfg, **kwargs)
        self.arch_name = arch if isinstance(arch, str) else 'custom'
        self.norm_eval = norm_eval
        for index, stage in enumerate(self.network):
            self.network[index] = CheckpointedStage(*stage)
            self.network[index].with_cp = with_cp
        for block in self.modules():
            if isinstance(block, Meta3D):
                block.token_mixer = ResizableAttentionWithBias(block.token_mixer.qkv.in_features)
        convert_pooling_token_mixers(self)

    @property
    def out_channels(self) -> List[int]:
        """Channels of each returned feature map, for wiring necks."""
        return [self.embed_dims[i] for i in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        return [self.strides[i] for i in self.out_indices]

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse, before any compute, inputs the network cannot run on.

        Each of the 5 stride-2 convolutions maps a side s to ceil(s / 2). The last stage's
        NCHW reshape halves the stride-16 grid by floor, so that grid, ceil(s / 16), must be even:
        multiples of 32 always work.
        """
        if x.dim() != 4 or x.shape[0] == 0:
            raise ValueError(f'{type(self).__name__} expects a non-empty (N, C, H, W) batch, got shape '
                             f'{tuple(x.shape)}')
        if self.reshape_last_feat:
            for side, size in zip(('height', 'width'), x.shape[-2:]):
                if math.ceil(size / 16) % 2:
                    nearest = max(32, 32 * round(size / 32))
                    raise ValueError(f'input {side} {size} cannot run: ceil({size} / 16) = {math.ceil(size / 16)} '
                                     f'must be even (sizes that are multiples of 32 work); resize or pad to '
                                     f'{nearest}')

    def forward(self, x: torch.Tensor):
        self.check_input(x)
        x = self.patch_embed(x)
        height, width = x.shape[-2:]
        for downsample in self.downsamples[1:]:
            if downsample:  # 3×3 conv, stride 2, padding 1
                height, width = (height + 1) // 2, (width + 1) // 2
        for module in self.network[-1].modules():
            if isinstance(module, ResizableAttentionWithBias):
                module.token_grid = (height, width)
        return self.forward_tokens(x)

    def init_weights(self):
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            return super().init_weights()
        self.load_pretrained(self.init_cfg['checkpoint'], self.init_cfg.get('prefix'))
        self._is_init = True

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None) -> None:
        """Load backbone weights of any layout; missing or mismatched backbone keys are errors.

        Output norms are the exception: a classification checkpoint has only the final
        LayerNorm, while a dense backbone has a fresh GroupNorm per output, so they are loaded
        only when the checkpoint has one for every output.
        """
        raw = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
        state = raw.get('state_dict', raw.get('model', raw)) if isinstance(raw, dict) else raw
        prefix = prefix or ('backbone.' if any(k.startswith('backbone.') for k in state) else '')
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        state = to_mmpretrain_layout(state)
        own = self.pretrained_keys()
        norm_keys = {k for k in own if k.startswith('norm')}
        if not norm_keys <= state.keys():
            state = {k: v for k, v in state.items() if not k.startswith('norm')}
            print_log(f'{checkpoint}: output norms {sorted({k.split(".")[0] for k in norm_keys})} '
                      'are not in the checkpoint (a classification trunk); they start fresh',
                      logger='current')
        missing = sorted(k for k in own.keys() - state.keys() - norm_keys if not k.endswith(DERIVED_BUFFERS))
        unexpected = sorted(state.keys() - own.keys())
        shapes = [f'{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}'
                  for k in sorted(own.keys() & state.keys()) if state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise KeyError(f'{checkpoint} does not fit EfficientFormer arch {self.arch_name!r}: '
                           f'missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches '
                           f'{shapes[:3]}; check the arch or the init_cfg prefix')
        self.load_state_dict(state, strict=False)
        print_log(f'loaded {len(state)} pretrained tensors from {checkpoint}', logger='current')

    def pretrained_keys(self) -> Dict[str, torch.Tensor]:
        """The state a pretrained checkpoint provides (subclasses drop their own additions)."""
        return self.state_dict()
