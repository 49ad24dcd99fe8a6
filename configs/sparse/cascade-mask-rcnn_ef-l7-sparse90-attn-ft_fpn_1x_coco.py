# Cascade Mask R-CNN, 90%-sparse EfficientFormer-L7: fine-tuning of the non-zero Meta3D attention weights (qkv,
# proj); the hook keeps every pruned weight at exactly zero.
_base_ = './cascade-mask-rcnn_ef-l7-sparse90-petah2_fpn_1x_coco.py'

model = dict(backbone=dict(adapter=dict(method='attn_ft')))
custom_hooks = [dict(type='PreserveSparsityHook')]
