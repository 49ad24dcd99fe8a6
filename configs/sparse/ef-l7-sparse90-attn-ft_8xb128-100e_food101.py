# Food-101, 90%-sparse EfficientFormer-L7 (PETAH Table 5):
# attention fine-tuning of the non-zero Meta3D qkv/proj weights; the hook keeps every
# pruned weight at exactly zero.
_base_ = [
    '../fgvc/ef-l7-attn-ft_8xb128-100e_food101.py',
    '../_base_/models/efficientformer_sparse.py',
]

model = dict(backbone=dict(init_cfg=dict(checkpoint=_base_.pop('ef_sparse_checkpoints').l7)))
custom_hooks = [dict(type='PreserveSparsityHook')]
