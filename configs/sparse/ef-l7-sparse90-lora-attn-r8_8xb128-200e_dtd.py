# DTD, 90%-sparse EfficientFormer-L7 (PETAH Table 5):
# LoRA of rank 8 on the Meta3D attention linears (Sparse-LoRA).
_base_ = [
    '../fgvc/ef-l7-lora-attn-r8_8xb128-200e_dtd.py',
    '../_base_/models/efficientformer_sparse.py',
]

model = dict(backbone=dict(init_cfg=dict(checkpoint=_base_.pop('ef_sparse_checkpoints').l7)))
