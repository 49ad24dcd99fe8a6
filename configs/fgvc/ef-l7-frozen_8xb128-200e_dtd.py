# DTD, EfficientFormer-L7: linear probing: the backbone is frozen, only the head trains.
_base_ = './ef-l7-petah2_8xb128-200e_dtd.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
