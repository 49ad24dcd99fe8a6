# Cascade R-CNN + FPN (boxes only): the Cascade Mask R-CNN recipe without the mask branch.
_base_ = './cascade-mask-rcnn_ef-l7-petah2_fpn_1x_coco.py'

model = dict(roi_head=dict(mask_roi_extractor=None, mask_head=None))

train_pipeline = [dict(t, with_mask=False) if t.type == 'LoadAnnotations' else t for t in _base_.train_pipeline]
test_pipeline = [dict(t, with_mask=False) if t.type == 'LoadAnnotations' else t for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(metric='bbox')
test_evaluator = val_evaluator
