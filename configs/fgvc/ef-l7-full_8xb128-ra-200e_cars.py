# Stanford Cars, EfficientFormer-L7, full fine-tuning + RandAugment (PETAH Table 4).
_base_ = ['./ef-l7-full_8xb128-200e_cars.py', '../_base_/datasets/rand_augment.py']

train_pipeline = [*_base_.train_pipeline[:-1], _base_.pop('rand_augment'), _base_.train_pipeline[-1]]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
