"""EfficientFormer with a task-adaptation method chosen by one config value."""
import re
from typing import Dict, List, Optional

from mmengine.registry import MODELS
from mmpretrain.models.backbones.efficientformer import Meta3D
from torch import nn

from ...adapters import AdaptedBackboneMixin
from .efficientformer import DenseEfficientFormer


@MODELS.register_module()
class PETAHEfficientFormer(AdaptedBackboneMixin, DenseEfficientFormer):
    """``DenseEfficientFormer`` adapted by ``adapter=dict(method=..., rank=8, conv_rank=...)``.

    Pretrained weights (``init_cfg``) load into the frozen layers under their usual names;
    the adapters are zeroed afterwards, so the adapted backbone starts as the pretrained one.

    Args:
        adapter: see :func:`petah_mm.adapters.build_plan`. Defaults to PETAH-2.
        norm_eval: defaults to what the method implies (frozen BatchNorm unless ``full``).
        **kwargs: arguments of :class:`DenseEfficientFormer`.
    """

    def __init__(self, adapter: dict = dict(method='petah', conv_rank=2),
                 norm_eval: Optional[bool] = None, **kwargs):
        super().__init__(**kwargs)
        self.setup_adapter(adapter)
        self.norm_eval = self.adapter_plan.norm_eval if norm_eval is None else norm_eval
        self._freeze_stages()  # frozen_stages freezes whole stages, adapters included

    @property
    def task_owned_prefixes(self) -> List[str]:
        """Output norms: fresh GroupNorms for dense tasks, the pretrained LayerNorm for classification."""
        return [f'norm{i}.' for i in self.out_indices]

    @property
    def adapter_targets(self) -> Dict[str, List[str]]:
        """Attention and MLP linears of the Meta3D blocks; every convolution (stem, downsamples, Meta4D MLPs)."""
        meta3d = [re.escape(name) for name, m in self.named_modules() if isinstance(m, Meta3D)]
        return dict(
            attn=[rf'{block}\.token_mixer\.(qkv|proj)' for block in meta3d],
            mlp=[rf'{block}\.mlp\.fc[12]' for block in meta3d],
            conv=[re.escape(name) for name, m in self.named_modules() if isinstance(m, nn.Conv2d)])

    def init_weights(self):
        super().init_weights()
        self.reset_adapters()

    def pretrained_keys(self):
        task_only = {name for name in self.task_state_dict() if '.adapter.' in name}
        return {k: v for k, v in self.state_dict().items() if k not in task_only}
