"""Evaluate a checkpoint on the test set of any petah_mm (mmdet/mmseg/mmpretrain) config.

Examples:
    python tools/test.py CONFIG work_dirs/NAME/epoch_12.pth
    python tools/test.py CONFIG CHECKPOINT --show-dir vis --out results.pkl
    bash tools/dist_test.sh CONFIG CHECKPOINT 8
"""
import os

from mmengine.config import Config
from mmengine.evaluator import DumpResults
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from petah_mm.engine import apply_common_args, parse_tool_args, show_predictions, tool_parser


def parse_args():
    parser = tool_parser('Test (and evaluate) a model with a PETAH-adapted backbone')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump predictions to a pickle file for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    return parse_tool_args(parser)


def main():
    args = parse_args()
    cfg = apply_common_args(Config.fromfile(args.config), args.config, args)
    if not os.path.isfile(args.checkpoint) and '://' not in args.checkpoint:
        raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist')
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        show_predictions(cfg, args.show_dir, args.show, args.wait_time)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise ValueError(f'--out {args.out!r}: the dump file must end in .pkl or .pickle')
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
