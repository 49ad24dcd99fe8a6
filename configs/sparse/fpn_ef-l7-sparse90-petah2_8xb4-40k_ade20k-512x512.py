# Semantic FPN, EfficientFormer-L7 pruned to 90% sparsity (PETAH Sec. 5.1, Sparse-PETAH): PETAH-2 adapters
# on the frozen sparse backbone. The other sparse variants inherit from this file. The backbone checkpoint is a
# local file written by the pruning tool (see ../_base_/models/efficientformer_sparse.py).
_base_ = [
    '../sem_fpn/fpn_ef-l7-petah2_8xb4-40k_ade20k-512x512.py',
    '../_base_/models/efficientformer_sparse.py',
]

model = dict(backbone=dict(init_cfg=dict(checkpoint=_base_.pop('ef_sparse_checkpoints').l7)))
