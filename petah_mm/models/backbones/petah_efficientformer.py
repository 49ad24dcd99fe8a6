"""EfficientFormer with a task-adaptation method chosen by one config value."""
import inspect
from typing import Optional, Sequence

from mmengine.registry import MODELS
from mmpretrain.models.backbones.efficientformer import EfficientFormer

from ...adapters import AdaptedBackboneMixin, is_adapter_key
from ...adapters.injector import Targets
from .efficientformer import DenseEfficientFormer

#: mmpretrain's EfficientFormer indexes a fixed 7x7 attention-bias table: it runs only on inputs
#: whose last stage is a 7x7 token grid, i.e. 224x224 (193 to 224 pixels a side)
FIXED_GRID = 7


def last_token_grid(size: int) -> int:
    """Tokens a side after the 4x stem and three stride-2 downsamples (3x3, padding 1)."""
    for _ in range(5):
        size = (size + 1) // 2
    return size


@MODELS.register_module()
class PETAHEfficientFormer(AdaptedBackboneMixin, DenseEfficientFormer):
    """``DenseEfficientFormer`` adapted by ``adapter=dict(method=..., rank=8, conv_rank=...)``.

    Its target groups are discovered: the Meta3D attention (``qkv``, ``proj``) and MLP linears,
    and every convolution (stem, downsamples, Meta4D MLPs). Pretrained weights (``init_cfg``)
    load into the frozen layers under their usual names; the adapters are zeroed afterwards.

    Args:
        adapter: see :func:`petah_mm.adapters.build_plan`. Defaults to PETAH-2.
        norm_eval: defaults to what the method implies (frozen BatchNorm statistics).
        targets: per-group regexes that replace the discovered layers.
        **kwargs: arguments of :class:`DenseEfficientFormer`.
    """

    def __init__(self, adapter: dict = dict(method='petah', conv_rank=2), norm_eval: Optional[bool] = None,
                 targets: Optional[Targets] = None, **kwargs):
        super().__init__(**kwargs)
        self.host_cfg = dict(type='DenseEfficientFormer', **kwargs)
        self.setup_adapter(adapter, targets, norm_eval)

    def plain_backbone_config(self, input_size: Optional[Sequence[int]] = None) -> dict:
        """mmpretrain's own ``EfficientFormer`` for a classifier tested at 224x224 (no petah_mm needed),
        else ``DenseEfficientFormer`` (mmpretrain's keys, any input size)."""
        classification = list(self.out_indices) == [3] and not self.reshape_last_feat
        if classification and input_size and all(last_token_grid(s) == FIXED_GRID for s in input_size):
            accepted = inspect.signature(EfficientFormer.__init__).parameters
            return dict({k: v for k, v in super().plain_backbone_config().items() if k in accepted},
                        type='mmpretrain.EfficientFormer')
        return super().plain_backbone_config()

    def pretrained_keys(self):
        task_only = {name for name in self.task_state_dict() if is_adapter_key(name)}
        return {k: v for k, v in self.state_dict().items() if k not in task_only}
