"""What tools/train.py and tools/test.py share, for mmdet, mmseg and mmpretrain configs alike."""
import argparse
import os
import os.path as osp
import re

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction

from ..utils.json_data import check_numbers

#: key names that feed a loss or a size (:func:`feeds_loss_or_size`): one of these words between underscores
LOSS_OR_SIZE = re.compile(r'(?:^|_)(?:loss|scale|size|shape|ratio)(?:e?s)?(?:_|$)')


def tool_parser(description: str) -> argparse.ArgumentParser:
    """The flags tools/train.py and tools/test.py share with mmdet's: --work-dir, --cfg-options, --launcher."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('config', help='config file path')
    parser.add_argument('--work-dir', help='the directory for logs, checkpoints and metrics')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.backbone.adapter.method=lora_attn')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_tool_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def apply_common_args(cfg: Config, config_path: str, args) -> Config:
    """--launcher, --cfg-options and --work-dir, the way mmdet's tools apply them; then non-finite numbers that
    feed a loss or a size are refused, naming the key, before any training or testing starts."""
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])
    check_numbers(cfg.to_dict(), config_path, where=feeds_loss_or_size)
    if args.launcher != 'none':
        setup_cpu_distributed(cfg)
    return cfg


def feeds_loss_or_size(key: str) -> bool:
    """Config keys whose numbers must be finite in a training config: a loss's (``loss_weight``, ``loss_cls``)
    and a size's (``scale``, ``crop_size``, ``ratio_range``, ``size_divisor``). A training config is the
    user's own Python, where ``float('inf')`` may be a meaningful bound elsewhere (a clip norm, a range)."""
    return bool(LOSS_OR_SIZE.search(key))


def setup_cpu_distributed(cfg: Config) -> None:
    """Make ``torchrun`` training work without CUDA, which mmengine 0.10.7 cannot do alone.

    mmengine's ``init_dist`` always calls ``torch.cuda.set_device`` and the Runner hands
    ``device_ids=[LOCAL_RANK]`` to DDP, which refuses CPU modules. Initialising a gloo process
    group first makes the Runner skip its own ``init_dist``; ``device_ids=None`` makes DDP
    accept the CPU model. SyncBatchNorm only exists on GPUs, so on CPU it becomes per-process
    BatchNorm whose buffers DDP broadcasts from rank 0 (ranks stay identical). With CUDA
    available nothing changes.
    """
    if torch.cuda.is_available():
        return
    if cfg.launcher != 'pytorch':
        raise RuntimeError(f'--launcher {cfg.launcher} needs CUDA here; on a CPU-only machine use '
                           'tools/dist_train.sh (torchrun, --launcher pytorch) with the gloo backend')
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    cfg.model = replace_sync_batchnorm(cfg.model)
    wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=True,
                   find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper.update(cfg.get('model_wrapper_cfg') or {})
    cfg.model_wrapper_cfg = dict(wrapper, device_ids=None)


def replace_sync_batchnorm(node):
    """The same config with every SyncBN norm_cfg turned into BN."""
    if isinstance(node, dict):
        node = type(node)({k: replace_sync_batchnorm(v) for k, v in node.items()})
        if node.get('type') in ('SyncBN', 'MMSyncBN'):
            node['type'] = 'BN'
        return node
    if isinstance(node, (list, tuple)):
        return type(node)(replace_sync_batchnorm(v) for v in node)
    return node


def show_predictions(cfg: Config, show_dir: str = None, show: bool = False, wait_time: float = 2.) -> None:
    """Switch on the library's visualization hook (mmdet/mmseg: ``draw``, mmpretrain: ``enable``)."""
    hook = cfg.get('default_hooks', {}).get('visualization')
    if hook is None:
        raise KeyError(f'--show/--show-dir need default_hooks.visualization in the config '
                       f'({cfg.filename}); the mmdet, mmseg and mmpretrain runtimes define it')
    if hook['type'] == 'VisualizationHook':  # mmpretrain
        hook.update(enable=True, show=show, wait_time=wait_time)
        if show_dir:
            hook['out_dir'] = show_dir
    else:
        hook.update(draw=True, show=show, wait_time=wait_time)
        if show_dir:
            hook['test_out_dir'] = show_dir
    os.environ.setdefault('MPLBACKEND', 'Agg')
