"""DropoutLinearClsHead: mmpretrain's linear head with dropout before it (PETAH Table 4's regularised runs)."""
import pytest
import torch
from mmengine.registry import init_default_scope
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

from petah_mm.models import DropoutLinearClsHead


def test_dropout_head_drops_only_while_training():
    init_default_scope('mmpretrain')
    head = MMPRETRAIN_MODELS.build(dict(type='DropoutLinearClsHead', num_classes=5, in_channels=4000,
                                        dropout_rate=0.1))
    assert isinstance(head, DropoutLinearClsHead)
    plain = LinearClsHead(num_classes=5, in_channels=4000)
    plain.load_state_dict(head.state_dict())
    feats = (torch.rand(3, 4000) + 1, )
    head.eval()
    torch.testing.assert_close(head(feats), plain(feats))
    head.train()
    dropped = head.pre_logits(feats)
    assert 0.07 < (dropped == 0).float().mean() < 0.13
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], feats[0][kept] / 0.9)
    with pytest.raises(ValueError, match='dropout_rate must lie in'):
        DropoutLinearClsHead(num_classes=5, in_channels=4, dropout_rate=1.0)
