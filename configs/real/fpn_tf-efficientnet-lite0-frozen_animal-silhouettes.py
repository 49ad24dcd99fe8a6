# Semantic FPN, real EfficientNet-Lite0, animal silhouettes: frozen backbone: only the neck and heads train.
_base_ = './fpn_tf-efficientnet-lite0-petah2_animal-silhouettes.py'

model = dict(backbone=dict(adapter=dict(method='frozen')))
