# PETAH Table 4's RandAugment ("RA"), as in EfficientFormer's ImageNet recipe (timm's
# rand-m9-mstd0.5-inc1). A helper, not a setting: the `-ra` configs take it out with
# `_base_.pop('rand_augment')` and put it before PackInputs, so that it stays out of their dumped config.
rand_augment = dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10, magnitude_level=9,
                    magnitude_std=0.5, hparams=dict(pad_val=[104, 116, 124], interpolation='bicubic'))
