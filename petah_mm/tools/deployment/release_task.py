"""Release a trained real task as a model-zoo entry: its package (adapter and heads only; the shared backbone is
the installed pretrained weights: ImageNet CNNs, DINOv2 ViT-S/14), named with the sha256 of its files, and its
measured metrics.

    python tools/deployment/release_task.py CONFIG CHECKPOINT [--out-root release] [--data-root DIR]
    python tools/deployment/release_task.py --backbone-only CONFIG OUT.safetensors

Detection, semantic segmentation and classification tasks (mmdet, mmseg, mmpretrain), on the CNN or the ViT
backbones of ``configs/real``. The first form exports the package with
:func:`petah_mm.deploy.export_task_package` (what ``tools/deployment/export_task.py`` writes), refuses it unless
the checkpoint's frozen backbone is exactly the config's installed pretrained weights, names it
``OUT_ROOT/<config name>-<first 8 hex digits of its digest>/`` (the digest: the sha256 of its ``SHA256SUMS``,
which lists the sha256 of every package file), loads it back with the installed weights, evaluates it through
mmengine's Runner on the split of DATA_ROOT that the config's test loader reads (the silhouettes' validation
split, the classification set's test split; DATA_ROOT defaults to the config's ``data_root``), and writes
``results.json`` in it, with the set's generator arguments (the tests regenerate that split and reproduce the
number: :mod:`.release_data`).
The second form writes the shared backbone file that ``tools/deployment/multitask_demo.py --backbone`` takes, from
the installed weights.
"""
import argparse
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
from mmengine.runner import Runner
from torch import nn

from petah_mm.deploy import build_trained_model, export_shared_backbone, export_task_package, load_task_package
from petah_mm.deploy.packages import read_bounded_text
from petah_mm.tools.deployment.release_data import data_record
from petah_mm.utils import write_bytes_atomic
from petah_mm.utils.fileio import file_sha256, staging_directory

PathLike = Union[str, Path]
#: the files whose sha256 name a package (``results.json`` is written after, and is not part of the name)
PACKAGE_FILES = ('adapter.safetensors', 'config.json', 'task.safetensors')
SUMS, RESULTS = 'SHA256SUMS', 'results.json'
#: the largest ``SHA256SUMS`` a package may have, in bytes: three lines of 64 hex digits and a name
MAX_SUMS_BYTES = 4096
#: the model zoo's name and scale of each metric the evaluators report (mmdet's box / mask AP in %; mmseg's mIoU
#: and mmpretrain's top-1 are in % already)
ZOO_METRICS = {'coco/bbox_mAP': ('box AP', 100), 'coco/segm_mAP': ('mask AP', 100), 'mIoU': ('mIoU', 1),
               'accuracy/top1': ('top-1', 1)}


def installed_backbone(config: PathLike) -> nn.Module:
    """The config's backbone with its installed pretrained weights (its ``init_cfg``), adapters at zero."""
    cfg = Config.fromfile(str(config))
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        backbone = MODELS.build(cfg.model.backbone)
    backbone.init_weights()
    return backbone


def write_installed_backbone(config: PathLike, out_file: PathLike, force: bool = False) -> int:
    """The shared backbone file of the config's installed weights, as ``export_task.py --backbone`` writes it."""
    return export_shared_backbone(nn.ModuleDict(dict(backbone=installed_backbone(config))), out_file, force=force)


def sums(package: Path) -> str:
    return ''.join(f'{file_sha256(package / name)}  {name}\n' for name in PACKAGE_FILES)


def listing_digest(listed: str) -> str:
    """The digest that names a package: the sha256 of its ``SHA256SUMS`` text."""
    return hashlib.sha256(listed.encode()).hexdigest()


def verify(package: PathLike) -> str:
    """Check that the package's files are those its ``SHA256SUMS`` lists and its name states; returns the digest."""
    package = Path(package)
    listed = read_bounded_text(package / SUMS, MAX_SUMS_BYTES, 'package checksum list')
    if sums(package) != listed:
        raise ValueError(f'{package}: its files do not match its {SUMS}; the package was changed after release')
    digest = listing_digest(listed)
    if not package.name.endswith('-' + digest[:8]):
        raise ValueError(f'{package}: the name should end in -{digest[:8]}, the sha256 prefix of its {SUMS}')
    return digest


def evaluate(package: PathLike, config: PathLike, shared: Dict, data_root: PathLike,
             work_dir: PathLike) -> Dict[str, float]:
    """The package's metrics (and ``num_images``) on the split of ``data_root`` that the test loader of ``config``
    reads, through mmengine's Runner: the package's model and test pipeline, the dataset and evaluator of
    ``config`` (the trusted training config; a package names no dataset)."""
    model = load_task_package(package, shared)
    cfg = Config.fromfile(str(config))
    root = str(data_root).rstrip('/') + '/'
    loader = cfg.test_dataloader
    loader.dataset.data_root = root
    loader.dataset.pipeline = model.cfg.test_dataloader.dataset.pipeline
    evaluator = cfg.test_evaluator
    if 'ann_file' in evaluator:
        evaluator.ann_file = root + 'annotations/instances_val2017.json'
    runner = Runner(model=model, work_dir=str(work_dir), test_dataloader=loader, test_evaluator=evaluator,
                    test_cfg=dict(type='TestLoop'), default_scope=cfg.default_scope, env_cfg=cfg.get('env_cfg'),
                    experiment_name=Path(package).name)
    metrics = runner.test()
    return dict(num_images=len(runner.test_dataloader.dataset),
                **{name: round(float(metrics[name]), 4) for name in ZOO_METRICS if name in metrics})


def release(config: PathLike, checkpoint: PathLike, out_root: PathLike, data_root: Optional[PathLike] = None,
            work_dir: Optional[PathLike] = None) -> Path:
    cfg, model, trained = build_trained_model(str(config), str(checkpoint))
    data_root = data_root or cfg.data_root
    data = data_record(data_root, cfg.test_dataloader.dataset)  # before any work: refuses a set of no manifest
    backbone = installed_backbone(config)
    if model.backbone.frozen_fingerprint() != backbone.frozen_fingerprint():
        raise ValueError(f'{checkpoint}: its frozen backbone weights are not the installed pretrained weights of '
                         f'{config}; a release ships adapters and heads for exactly those weights')
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    staging = staging_directory(out_root / 'release') / 'package'  # a killed release's is removed by the next
    export_task_package(model, cfg, staging, trained.get('meta', {}).get('dataset_meta'))  # class names
    listed = sums(staging)
    write_bytes_atomic(staging / SUMS, listed.encode())
    final = out_root / f'{Path(config).stem}-{listing_digest(listed)[:8]}'
    if final.exists():
        raise FileExistsError(f'{final} exists: this package is released already')
    os.rename(staging, final)
    staging.parent.rmdir()
    shared = backbone.shared_state_dict()
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix='petah-release-'))
    results = dict(config=str(config), checkpoint_sha256=file_sha256(checkpoint),
                   backbone_fingerprint=backbone.frozen_fingerprint(), data=data,
                   metrics=evaluate(final, config, shared, data_root, work_dir / 'val'))
    write_bytes_atomic(final / RESULTS, json.dumps(results, indent=2).encode())
    return final


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('config', help='the configs/real config the checkpoint was trained with')
    parser.add_argument('target', help='the trained checkpoint (or, with --backbone-only, the file to write)')
    parser.add_argument('--backbone-only', action='store_true',
                        help='write the shared backbone file of the installed weights to TARGET, and nothing else')
    parser.add_argument('--out-root', default='release', help='the released packages\' folder')
    parser.add_argument('--data-root', help='the set the stated metrics are measured on (the split the config\'s '
                        'test loader reads; default: the config\'s data_root)')
    parser.add_argument('--work-dir', help='evaluation logs (default: a temporary folder)')
    return parser.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    if args.backbone_only:
        size = write_installed_backbone(args.config, args.target)
        print(f'{args.target}: the installed backbone weights of {args.config}, {size / 1e6:.1f} MB')
        return Path(args.target)
    package = release(args.config, args.target, args.out_root, args.data_root, args.work_dir)
    print(f'released {package}:\n{(package / RESULTS).read_text()}')
    return package


if __name__ == '__main__':
    main()
