# Cascade Mask R-CNN, Swin-T: full fine-tuning of the backbone;
# normalisation statistics stay frozen, as the method implies.
_base_ = './cascade-mask-rcnn_swin-t-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='full')))
