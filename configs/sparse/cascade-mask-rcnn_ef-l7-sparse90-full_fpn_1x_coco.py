# Cascade Mask R-CNN, 90%-sparse EfficientFormer-L7: full fine-tuning of the non-zero weights; the hook keeps
# every pruned weight at exactly zero.
_base_ = './cascade-mask-rcnn_ef-l7-sparse90-petah2_fpn_1x_coco.py'

# BatchNorm statistics stay frozen (2 images per GPU are too few), as the method implies.
model = dict(backbone=dict(adapter=dict(method='full')))
custom_hooks = [dict(type='PreserveSparsityHook')]
