# Stanford Cars, EfficientFormer-L1: linear probing: the backbone is frozen, only the head trains.
_base_ = './ef-l1-petah2_8xb128-200e_cars.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
