# The main job's config: Cascade Mask R-CNN with a PETAH-2 EfficientFormer-L1, on the toy COCO set
# that `python tools/misc/make_toy_data.py coco data/toy_coco` writes. Only the data root, image
# size and schedule differ from the COCO config. The "pretrained" backbone is the seeded random
# EfficientFormer that `python tools/misc/make_toy_backbone.py` writes, because nothing can be
# downloaded here; every toy task shares it, as tasks on one device share a backbone.
_base_ = '../cascade_rcnn/cascade-mask-rcnn_ef-l1-petah2_fpn_1x_coco.py'

data_root = 'data/toy_coco/'

train_pipeline = [dict(t, scale=(192, 160)) if t.type == 'Resize' else t for t in _base_.train_pipeline]
test_pipeline = [dict(t, scale=(192, 160)) if t.type == 'Resize' else t for t in _base_.test_pipeline]
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=10, val_interval=10)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', begin=0, end=10, by_epoch=True, milestones=[8, 9], gamma=0.1),
]
optim_wrapper = dict(optimizer=dict(lr=1e-3))
# --show-dir draws every test image (the library's default, every 50th, would skip all 16)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=10, max_keep_ckpts=1),
                     visualization=dict(interval=1))
# The same metrics on every run on one machine: seeded, and deterministic algorithms only
randomness = dict(seed=0, deterministic=True)

model = dict(
    backbone=dict(init_cfg=dict(checkpoint='data/toy_backbone/efficientformer-l1_seed0.pth')),
    # RoI budgets scaled to images ~35x smaller than 1333x800 that hold 1-3 objects: 300 RPN
    # proposals and 64 sampled RoIs per stage keep a CPU iteration near 3 s instead of 14 s.
    train_cfg=dict(
        rpn_proposal=dict(max_per_img=300),
        rcnn=[dict(stage, sampler=dict(stage.sampler, num=64)) for stage in _base_.model.train_cfg.rcnn]))
