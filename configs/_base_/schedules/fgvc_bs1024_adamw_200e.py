# PETAH Table 7 schedule for fine-grained classification, on mmpretrain's AdamW schedule for the same
# batch (8 GPUs x 128 images) and its default runtime: 2 epochs of linear warmup, then a cosine decay
# to zero, 200 epochs. Validation and checkpoints every 10 epochs and after the last one.
#
# Learning rates: Table 7 gives grids, searched on the validation split by
# tools/analysis_tools/hparam_grid.py, which reports the best point (App. A.1):
#   lr (the linear head's)              linear probing {0.005, 0.01, 0.05}; the others {0.001, 0.005, 0.01}
#   weight decay                        {0, 0.0002, 0.002, 0.02}
#   LR factor, full and attention FT    {0.001, 0.1, 1.0}      (on the backbone weights)
#   LR factor, LoRA and PETAH           {0.1, 1.0, 5.0, 10.0}  (on the adapters)
# Defaults: lr 0.005 and weight decay 0.0002, in every method's grid; factor 1.0 here, 0.1 in the
# full and attn-ft configs.
_base_ = [
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]

optim_wrapper = dict(
    # petah_mm's constructor: frozen parameters stay out of the optimizer, one summary line in the log
    constructor='PETAHOptimWrapperConstructor',
    optimizer=dict(lr=5e-3, weight_decay=2e-4),
    # The LR factor multiplies the head's LR for every backbone tensor that trains: the adapters of
    # LoRA and PETAH (the rest of their backbone is frozen) or the backbone weights of full and
    # attention FT. One key for all methods keeps `--cfg-options model.backbone.adapter.method=...` right.
    paramwise_cfg=dict(_delete_=True, custom_keys={'backbone': dict(lr_mult=1.0)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=2, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=200, val_interval=10)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=10, max_keep_ckpts=1))  # crash-safe saves
