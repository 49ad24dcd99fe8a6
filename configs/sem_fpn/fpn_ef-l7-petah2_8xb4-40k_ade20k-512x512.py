# Semantic FPN with a PETAH-2 EfficientFormer-L7 on ADE20K (150 classes), PETAH App. A.2:
# 40k iterations of AdamW (lr 2e-4, wd 1e-4, poly decay), 4 images per GPU on 8 GPUs,
# evaluated at 2048x512. Other methods and sizes inherit from this file.
_base_ = [
    '../_base_/recipes/fpn_8xb4-40k_ade20k-512x512.py',
    '../_base_/models/efficientformer.py',
]
__checkpoints, __channels, __backbone = map(_base_.pop, ('ef_checkpoints', 'ef_channels', 'petah_backbone'))

model = dict(backbone=dict(__backbone, _delete_=True), neck=dict(in_channels=__channels.l7))
