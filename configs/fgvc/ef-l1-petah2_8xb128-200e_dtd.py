# DTD with a PETAH-2 EfficientFormer-L1 and a linear head: the PETAH Table 9 recipe.
# The other methods for DTD and EfficientFormer-L1 inherit from this file.
_base_ = [
    '../_base_/models/ef-l1-petah2_linear.py',
    '../_base_/datasets/dtd_bs128_224.py',
    '../_base_/schedules/fgvc_bs1024_adamw_200e.py',
]

model = dict(head=dict(num_classes=47))
