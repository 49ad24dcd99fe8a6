# Food-101, 90%-sparse EfficientFormer-L7 (PETAH Table 5):
# PETAH-1 adapters on the frozen sparse backbone (Sparse-PETAH).
_base_ = [
    '../fgvc/ef-l7-petah1_8xb128-100e_food101.py',
    '../_base_/models/efficientformer_sparse.py',
]

model = dict(backbone=dict(init_cfg=dict(checkpoint=_base_.pop('ef_sparse_checkpoints').l7)))
