# Fine-tuning a pretrained CNN on the animal classification set that
# `python tools/misc/make_real_data.py cls data/animal_cls` writes (petah_mm.datasets.make_animal_classification:
# animal-mnist silhouettes on scikit-image photo crops, 64x64, ten classes; train / val / test folders whose
# silhouettes are disjoint). ImageClassifier: the backbone's last feature map, averaged, one linear layer. A config
# adds a backbone base (./tf-efficientnet-lite0.py or ./mobilenetv2-100.py) and takes its `real_*` values.
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['petah_mm'], allow_failed_imports=False)

data_root = 'data/animal_cls'
model = dict(
    type='ImageClassifier',
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=10, loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, )))
data_preprocessor = dict(num_classes=10, to_rgb=True)

train_pipeline = [dict(type='LoadImageFromFile'), dict(type='RandomFlip', prob=0.5), dict(type='PackInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
__loader = dict(batch_size=32, num_workers=0, persistent_workers=False)
train_dataloader = dict(
    __loader, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    __loader, sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='CustomDataset', data_root=data_root, data_prefix='val', pipeline=test_pipeline))
# the test split: no choice of hyperparameters may look at it
test_dataloader = dict(val_dataloader, dataset=dict(val_dataloader['dataset'], data_prefix='test'))
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

optim_wrapper = dict(
    # petah_mm's constructor: frozen parameters stay out of the optimizer, one summary line in the log
    constructor='PETAHOptimWrapperConstructor',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=1e-4),
    # the LR factor of every backbone tensor that trains (adapters, or all weights under full), as in configs/fgvc
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=1, convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=10, val_interval=10)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(type='SafeCheckpointHook', interval=10, max_keep_ckpts=1))  # crash-safe saves
# The same metrics on every run on one machine: seeded, and deterministic algorithms only
randomness = dict(seed=0, deterministic=True)
