# CUB-200-2011, EfficientFormer-L7, PETAH-2 + RandAugment (PETAH Table 4).
_base_ = './ef-l7-petah2_8xb128-200e_cub.py'

train_dataloader = dict(dataset=dict(pipeline={{_base_.train_pipeline_ra}}))
