# Food-101 (101 classes) with the 224-pixel CUB pipelines. Validation runs on 50 training images per
# class held out by petah_mm's Food101WithVal (PETAH Sec. 4); training uses the remaining 70,700.
_base_ = './cub_bs128_224.py'

dataset_type = 'Food101WithVal'
data_root = 'data/food-101'
data_preprocessor = dict(num_classes=101)
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='train'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='val'))
test_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='test'))
