# Cascade Mask R-CNN, 90%-sparse EfficientFormer-L7: full fine-tuning of the non-zero weights; the hook keeps
# every pruned weight at exactly zero.
_base_ = './cascade-mask-rcnn_ef-l7-sparse90-petah2_fpn_1x_coco.py'

# 2 images per GPU are too few for BatchNorm statistics: keep them frozen, as mmdet does.
model = dict(backbone=dict(adapter=dict(method='full'), norm_eval=True))
custom_hooks = [dict(type='PreserveSparsityHook')]
