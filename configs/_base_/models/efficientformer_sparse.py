# 90%-sparse EfficientFormer backbones (PETAH Sec. 5.1). Nothing is downloaded: the pruning tool writes them to
# these local paths (relative to the working directory), from a pretrained checkpoint or, for a demo, random weights:
#   python tools/model_converters/prune_efficientformer.py EF_L7_CHECKPOINT checkpoints/ef-l7-sparse90.pth --arch l7
#   python tools/model_converters/prune_efficientformer.py --random-init --arch l7 checkpoints/ef-l7-sparse90.pth
# A helper, not a setting: configs take it out with `_base_.pop('ef_sparse_checkpoints')`, so that it stays out
# of their dumped config.
ef_sparse_checkpoints = dict(l7='checkpoints/ef-l7-sparse90.pth')
