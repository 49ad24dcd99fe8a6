# Animal classification (64x64), MobileNetV2 with real ImageNet-1k weights, linear probing: the backbone
# is frozen, only the head trains.
_base_ = './mobilenetv2-100-petah2_animal-cls-64px.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
