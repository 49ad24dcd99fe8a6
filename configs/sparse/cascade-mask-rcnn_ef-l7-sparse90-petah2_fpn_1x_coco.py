# Cascade Mask R-CNN, EfficientFormer-L7 pruned to 90% sparsity (PETAH Sec. 5.1, Sparse-PETAH): PETAH-2 adapters
# on the frozen sparse backbone. The other sparse variants inherit from this file.
# checkpoints/ef-l7-sparse90.pth (relative to the working directory) is written by the pruning tool:
#   python tools/model_converters/prune_efficientformer.py EF_L7_CHECKPOINT checkpoints/ef-l7-sparse90.pth --arch l7
# (or `--random-init --arch l7` for a demo backbone where nothing can be downloaded).
_base_ = '../cascade_rcnn/cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py'
custom_imports = dict(imports=['petah_mm', 'petah_mm.sparse'], allow_failed_imports=False)

model = dict(backbone=dict(init_cfg=dict(checkpoint='checkpoints/ef-l7-sparse90.pth')))
