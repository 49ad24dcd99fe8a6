# Animal classification (64x64), EfficientNet-Lite0 with real ImageNet-1k weights, linear probing: the backbone
# is frozen, only the head trains.
_base_ = './tf-efficientnet-lite0-petah2_animal-cls-64px.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
