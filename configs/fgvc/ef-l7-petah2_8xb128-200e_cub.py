# CUB-200-2011 with a PETAH-2 EfficientFormer-L7 and a linear head: the PETAH Table 3 recipe.
# The other methods for CUB-200-2011 and EfficientFormer-L7 inherit from this file.
_base_ = [
    '../_base_/models/ef-l7-petah2_linear.py',
    '../_base_/datasets/cub_bs128_224.py',
    '../_base_/schedules/fgvc_bs1024_adamw_200e.py',
]

model = dict(head=dict(num_classes=200))
