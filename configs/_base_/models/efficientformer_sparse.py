# 90%-sparse EfficientFormer backbones (PETAH Sec. 5.1): local files, which the pruning tool writes to these paths
# (relative to the working directory), from the dense config's pretrained checkpoint or, for a demo,
# random weights (the classification trunk's file serves the detection and segmentation configs too):
#   python tools/model_converters/prune_backbone.py configs/fgvc/ef-l7-petah2_8xb128-100e_food101.py \
#       checkpoints/ef-l7-sparse90.pth [--random-init]
# A helper, not a setting: configs take it out with `_base_.pop('ef_sparse_checkpoints')`, so that it stays out
# of their dumped config.
ef_sparse_checkpoints = dict(l7='checkpoints/ef-l7-sparse90.pth')
