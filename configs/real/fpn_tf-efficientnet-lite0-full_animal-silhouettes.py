# Semantic FPN, real EfficientNet-Lite0, animal silhouettes: full fine-tuning of the backbone.
_base_ = './fpn_tf-efficientnet-lite0-petah2_animal-silhouettes.py'

model = dict(backbone=dict(adapter=dict(method='full')))
