# FGVC-Aircraft (100 variants) with the 224-pixel CUB pipelines: trained on the official train split,
# validated on the official val split (where PETAH searches its hyperparameters), tested on test.
_base_ = './cub_bs128_224.py'

dataset_type = 'FGVCAircraft'
data_root = 'data/fgvc-aircraft-2013b'
data_preprocessor = dict(num_classes=100)
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='train'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='val'))
test_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='test'))
