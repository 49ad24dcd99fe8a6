# DTD, EfficientFormer-L3: linear probing: the backbone is frozen, only the head trains.
_base_ = './ef-l3-petah2_8xb128-200e_dtd.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
