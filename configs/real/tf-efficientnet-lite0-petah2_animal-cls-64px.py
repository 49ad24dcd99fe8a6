# PETAH-2 on EfficientNet-Lite0 with its real ImageNet-1k weights, fine-tuned on the animal classification set
# (64x64). A CNN has no attention: PETAH is its conv LoRA of rank 2 on every convolution. Other methods inherit.
_base_ = ['./_base_/animal-cls-64px.py', './_base_/tf-efficientnet-lite0.py']
__real = _base_.pop('real')

model = dict(backbone=__real.backbone, head=dict(in_channels=__real.num_features))
data_preprocessor = __real.mean_std
