# Short name for configs/cascade_rcnn/cascade-rcnn_ef-l7-petah2_fpn_1x_coco.py
_base_ = './cascade_rcnn/cascade-rcnn_ef-l7-petah2_fpn_1x_coco.py'
