"""Prepare a trained checkpoint for a model zoo (mmdet's convention).

    python tools/model_converters/publish_model.py work_dirs/NAME/epoch_12.pth \
        cascade-rcnn_ef-l7-petah2_fpn_1x_coco.pth
    -> cascade-rcnn_ef-l7-petah2_fpn_1x_coco-<first 8 hex digits of sha256>.pth

Only ``meta`` and ``state_dict`` are kept: the optimizer, message hub and scheduler states go.
The input is read by petah_mm's checkpoint loader (``weights_only=True``); an existing output is
refused unless ``--force``.
"""
import argparse

from mmengine.logging import print_log

from petah_mm.deploy import publish_checkpoint
from petah_mm.deploy.publish import DEFAULT_SAVE_KEYS


def main():
    parser = argparse.ArgumentParser(description='Process a checkpoint to be published')
    parser.add_argument('in_file', help='input checkpoint filename')
    parser.add_argument('out_file', help='output checkpoint filename (the sha256 prefix is appended)')
    parser.add_argument('--save-keys', nargs='+', default=list(DEFAULT_SAVE_KEYS),
                        help='keys to keep in the published checkpoint')
    parser.add_argument('--force', action='store_true', help='replace an existing output file')
    args = parser.parse_args()
    final = publish_checkpoint(args.in_file, args.out_file, args.save_keys, force=args.force)
    print_log(f'The published model is saved at {final}.', logger='current')


if __name__ == '__main__':
    main()
