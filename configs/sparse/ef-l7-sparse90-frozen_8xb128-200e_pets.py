# Oxford-IIIT Pets, 90%-sparse EfficientFormer-L7 (PETAH Table 5):
# linear probing: the frozen sparse backbone, only the head trains.
_base_ = [
    '../fgvc/ef-l7-frozen_8xb128-200e_pets.py',
    '../_base_/models/efficientformer_sparse.py',
]

model = dict(backbone=dict(init_cfg=dict(checkpoint=_base_.pop('ef_sparse_checkpoints').l7)))
