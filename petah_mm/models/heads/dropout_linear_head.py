"""A linear classification head with dropout on its input (PETAH Table 4, "DO")."""
from typing import Tuple

import torch
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS
from torch import nn


@MODELS.register_module()
class DropoutLinearClsHead(LinearClsHead):
    """``LinearClsHead`` that drops pooled features before the classifier while training.

    Args:
        dropout_rate: probability of zeroing a feature (PETAH uses 0.1). Named as in
            mmpretrain's ``StackedLinearClsHead``.
        **kwargs: arguments of :class:`mmpretrain.models.heads.LinearClsHead`.
    """

    def __init__(self, *args, dropout_rate: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 <= dropout_rate < 1:
            raise ValueError(f'dropout_rate must lie in [0, 1), got {dropout_rate!r}')
        self.dropout = nn.Dropout(dropout_rate)

    def pre_logits(self, feats: Tuple[torch.Tensor]) -> torch.Tensor:
        return self.dropout(super().pre_logits(feats))
