# Stanford Cars (196 classes) with the 224-pixel CUB pipelines. No validation split exists, so, as for
# CUB, validation runs on the test split and PETAH reuses the Aircraft/DTD hyperparameters (App. A.1).
_base_ = './cub_bs128_224.py'

dataset_type = 'StanfordCars'
data_root = 'data/Stanford_Cars'
data_preprocessor = dict(num_classes=196)
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='train'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='test'))
test_dataloader = val_dataloader
