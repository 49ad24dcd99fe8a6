# Oxford-IIIT Pets (37 classes) with the 224-pixel CUB pipelines, trained on the official trainval split.
# No validation split exists, so, as for CUB, validation runs on the test split (PETAH App. A.1).
_base_ = './cub_bs128_224.py'

dataset_type = 'OxfordIIITPet'
data_root = 'data/Oxford-IIIT_Pets'
data_preprocessor = dict(num_classes=37)
train_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='trainval'))
val_dataloader = dict(dataset=dict(type=dataset_type, data_root=data_root, split='test'))
test_dataloader = val_dataloader
