# Describable Textures (47 classes, official split 1) with the 224-pixel CUB pipelines: trained on
# train, validated on val (where PETAH searches its hyperparameters), tested on test.
_base_ = './cub_bs128_224.py'

dataset_type = 'DTD'
data_root = 'data/dtd'
data_preprocessor = dict(num_classes=47)
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='train'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='val'))
test_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='test'))
