"""Export a trained task as a package: its backbone adapter, its own weights and its config.

    python tools/deployment/export_task.py CONFIG CHECKPOINT OUT_DIR [--backbone backbone.safetensors]

The package holds ``adapter.safetensors`` (what the task changes in the shared backbone),
``task.safetensors`` (neck, heads, output norms) and ``config.json``. ``--backbone`` also writes
the shared frozen weights, which every task on the device uses once (an existing file is refused
unless ``--force``). Sizes are printed.
"""
import argparse

from petah_mm.deploy import build_trained_model, export_shared_backbone, export_task_package
from petah_mm.utils import check_output_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a trained (or published) checkpoint')
    parser.add_argument('out_dir', help='package directory to create')
    parser.add_argument('--backbone', help='also write the shared frozen backbone weights to this file')
    parser.add_argument('--force', action='store_true', help='replace an existing --backbone file')
    args = parser.parse_args()
    if args.backbone:  # refused before any work, not after the package is written
        check_output_path(args.backbone, args.force, inputs=[args.config, args.checkpoint])
    cfg, model, checkpoint = build_trained_model(args.config, args.checkpoint)
    sizes = export_task_package(model, cfg, args.out_dir, checkpoint.get('meta', {}).get('dataset_meta'))
    backbone = model.backbone
    print(f'{args.out_dir}: {backbone.adapter_plan.describe()}')
    for name, size in sizes.items():
        print(f'  {name + ".safetensors" if name != "config" else "config.json":<22}{size / 1e6:9.3f} MB')
    if args.backbone:
        size = export_shared_backbone(model, args.backbone, force=args.force)
        print(f'shared backbone {args.backbone}: {size / 1e6:.1f} MB (stored once for all tasks)')


if __name__ == '__main__':
    main()
