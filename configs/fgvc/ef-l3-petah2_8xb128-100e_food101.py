# Food-101 with a PETAH-2 EfficientFormer-L3 and a linear head: the PETAH Table 3 recipe.
# The other methods for Food-101 and EfficientFormer-L3 inherit from this file.
_base_ = [
    '../_base_/models/ef-l3-petah2_linear.py',
    '../_base_/datasets/food101_bs128_224.py',
    '../_base_/schedules/fgvc_bs1024_adamw_100e.py',
]

model = dict(head=dict(num_classes=101))
