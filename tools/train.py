"""Train a detector, segmentor or classifier from any petah_mm (mmdet/mmseg/mmpretrain) config.

The config's ``default_scope`` decides the library, so one script serves all three, with
mmdet's flags. Examples:
    python tools/train.py configs/cascade_rcnn_ef_l7_petah2.py
    python tools/train.py CONFIG --cfg-options model.backbone.adapter.method=lora_attn
    bash tools/dist_train.sh CONFIG 8
"""
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from petah_mm.engine import amp_optim_wrapper, apply_common_args, parse_tool_args, tool_parser
from petah_mm.engine.resume import check_resume


def parse_args():
    parser = tool_parser('Train a model with a PETAH-adapted backbone')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: fp16 with a dynamic loss scale on CUDA, bf16 on CPU')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the LR by the actual batch size over auto_scale_lr.base_batch_size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or, without a path, from the latest '
                        'checkpoint in the work directory')
    return parse_tool_args(parser)


def main():
    args = parse_args()
    cfg = apply_common_args(Config.fromfile(args.config), args.config, args)
    if args.amp:
        cfg.optim_wrapper = amp_optim_wrapper(cfg.optim_wrapper)
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise KeyError(f'--auto-scale-lr needs auto_scale_lr.base_batch_size in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    check_resume(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    runner.train()


if __name__ == '__main__':
    main()
