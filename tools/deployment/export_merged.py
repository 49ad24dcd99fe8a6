"""Merge a task's adapters into the backbone kernels and write a plain checkpoint.

    python tools/deployment/export_merged.py CONFIG CHECKPOINT OUT.pth

Writes ``OUT.pth`` (``state_dict`` only, no adapter keys) and ``OUT.py``, an adapter-free
config: mmpretrain's own ``EfficientFormer`` for a 224x224 classifier (no petah_mm needed),
``DenseEfficientFormer`` (mmpretrain's key layout, any input size) for detection and
segmentation. The merged model costs exactly what the plain backbone costs. Existing outputs are
refused unless ``--force``; the config and checkpoint given are never overwritten, and ``OUT`` may not end
in ``.py`` (its config would replace it).
"""
import argparse

from petah_mm.deploy import build_trained_model, export_merged
from petah_mm.deploy.merged import merged_output_paths


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='a trained (or published) checkpoint')
    parser.add_argument('out', help='merged checkpoint to write (.pth); its config goes next to it (.py)')
    parser.add_argument('--force', action='store_true', help='replace existing output files')
    args = parser.parse_args()
    try:  # refused before any work; the writers refuse again, atomically, when they publish
        merged_output_paths(args.out, args.force, inputs=[args.config, args.checkpoint])
    except (ValueError, FileExistsError) as e:
        parser.error(str(e))
    cfg, model, _ = build_trained_model(args.config, args.checkpoint)
    out = export_merged(model, cfg, args.out, force=args.force, inputs=[args.config, args.checkpoint])
    print(f'merged checkpoint {out} ({out.stat().st_size / 1e6:.1f} MB), config {out.with_suffix(".py")}')


if __name__ == '__main__':
    main()
