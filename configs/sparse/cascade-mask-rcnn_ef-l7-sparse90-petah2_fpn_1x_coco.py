# Cascade Mask R-CNN, EfficientFormer-L7 pruned to 90% sparsity (PETAH Sec. 5.1, Sparse-PETAH): PETAH-2 adapters
# on the frozen sparse backbone. The other sparse variants inherit from this file. The backbone checkpoint is a
# local file written by the pruning tool (see ../_base_/models/efficientformer_sparse.py).
_base_ = [
    '../cascade_rcnn/cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py',
    '../_base_/models/efficientformer_sparse.py',
]

model = dict(backbone=dict(init_cfg=dict(checkpoint=_base_.pop('ef_sparse_checkpoints').l7)))
