# Cascade Mask R-CNN, FastViT-SA12 (timm): full fine-tuning of the backbone;
# normalisation statistics stay frozen, as the method implies.
_base_ = './cascade-mask-rcnn_fastvit-sa12-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='full')))
