# Cascade Mask R-CNN + FPN with a PETAH-2 EfficientFormer-L7 on COCO at 640x480 (PETAH, App. A.2):
# 12 epochs of AdamW (lr 1e-4, wd 0.05), 500-iteration linear warmup, LR steps at epochs 8 and 11,
# 2 images per GPU on 8 GPUs. Other methods and sizes inherit from this file.
_base_ = [
    '../_base_/recipes/cascade-mask-rcnn_fpn_1x_coco-640x480.py',
    '../_base_/models/efficientformer.py',
]
__checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))

model = dict(backbone=dict(__backbone, _delete_=True), neck=dict(in_channels=__channels.l7))
