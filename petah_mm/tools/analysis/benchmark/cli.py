"""The command line of ``tools/analysis_tools/benchmark.py``: parse, run each job, write the report."""
import argparse
import json
from pathlib import Path

import torch

from petah_mm.adapters.presets import PRESETS
from petah_mm.utils import atomic_write
from petah_mm.utils.machine import describe
from .ablations import ABLATION_NAMES, CHOICES
from .common import AMP_PRECISION, PRECISIONS
from .inference import inference
from .report import markdown
from .sizes import sizes_and_flops
from .switch import switch_time
from .training import train_worker, training

DESCRIPTION = 'Measure what PETAH costs: inference latency, training step time, peak memory, sizes and FLOPs.'
DEFAULT_METHODS = ['full', 'attn-ft', 'lora-attn-r8', 'petah1', 'petah2', 'frozen']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument('--config', help='benchmark model.backbone of this mmdet/mmseg/mmpretrain config')
    parser.add_argument('--arch', default='l7', choices=['l1', 'l3', 'l7'], help='without --config')
    parser.add_argument('--methods', nargs='+', default=DEFAULT_METHODS, choices=list(PRESETS),
                        help='adapter presets to compare (full is the reference of the ratios)')
    parser.add_argument('--ablations', nargs='+', choices=ABLATION_NAMES, help='the optimisations whose ablation '
                        'rows to measure, each undone alone (default: all, pooling only for the EfficientFormer '
                        'trunk on the CPU; pooling also adds inference rows)')
    parser.add_argument('--skip-ablations', action='store_true', help='no ablation rows')
    parser.add_argument('--amp', action='store_true', help='also measure every row under autocast in the dtype '
                        'tools/train.py --amp trains with: bf16 on the CPU, fp16 on CUDA')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda' (or 'cuda:N')")
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8, help='batch of the training step')
    parser.add_argument('--inference-batches', type=int, nargs='+', help='batches of the inference rows '
                        '(default: --batch)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--rounds', type=int, default=1, help='training: run every method this many times, in '
                        'rotating order, and keep its fastest round; inference: time rounds × repeats passes')
    parser.add_argument('--op-breakdown', action='store_true', help='profile one training step of full and '
                        'petah2 (in the --amp dtype if given) and report their costliest ops side by side')
    parser.add_argument('--runtime', choices=['pytorch', 'onnxruntime'], default='pytorch',
                        help='onnxruntime: also time the plain, merged, multi-task-form and int8 backbones in ONNX '
                        'Runtime (CPU), next to the PyTorch rows')
    parser.add_argument('--inference-only', action='store_true',
                        help='only the inference rows (PyTorch, and ONNX Runtime with --runtime onnxruntime): no '
                        'training steps, sizes, FLOPs or task switch')
    parser.add_argument('--unmerged-forms', choices=['measured', 'flops', 'both'], default='measured',
                        help="measured: unmerged LoRA layers run the inference form measured faster on this CPU "
                        "(timed once per layer shape, cached in ~/.cache/petah_mm/unmerged_forms or "
                        "$PETAH_MM_CACHE); flops: choose it by FLOPs; both: also rows that keep the FLOPs rule")
    parser.add_argument('--peft', action='store_true', help='add a training row of peft 0.21 LoRA on petah2\'s '
                        'targets and ranks (the peer; peft installed by tools/install.sh) and the margins to it')
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--method', choices=list(PRESETS), help=argparse.SUPPRESS)
    parser.add_argument('--precision', choices=list(PRECISIONS), default='fp32', help=argparse.SUPPRESS)
    parser.add_argument('--profile', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--ablation', choices=CHOICES, default='none',
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device.split(':')[0] not in AMP_PRECISION:
        parser.error(f"--device {args.device}: expected 'cpu', 'cuda' or 'cuda:N'")
    if torch.device(args.device).type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch sees no CUDA device here (torch {torch.__version__}); '
                     'run on a GPU machine with a CUDA build of torch, or use --device cpu')
    args.inference_batches = args.inference_batches or [args.batch]
    if args.skip_ablations and args.ablations:
        parser.error('--skip-ablations and --ablations: give one of them')
    if args.skip_ablations:
        args.ablations = []
    elif args.ablations is None:  # the box filter runs on the CPU only, and --config backbones may have no pooling
        args.ablations = [name for name in ABLATION_NAMES
                          if name != 'pooling' or (args.config is None and args.device == 'cpu')]
    if args.rounds < 1 or args.repeats < 1:
        parser.error(f'--rounds {args.rounds} --repeats {args.repeats}: both must be at least 1')
    if 'petah2' not in args.methods:
        parser.error('--methods must include petah2: the inference and task-switch rows measure it')
    if args.inference_only and args.op_breakdown:
        parser.error('--op-breakdown profiles training steps, which --inference-only skips')
    if args.peft and (args.inference_only or args.device != 'cpu'):
        parser.error('--peft adds a CPU training row: drop --inference-only, use --device cpu')
    if args.op_breakdown and 'full' not in args.methods:
        parser.error('--op-breakdown compares full fine-tuning with petah2: add full to --methods')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return train_worker(args)
    latencies, forms = inference(args)
    if args.runtime == 'onnxruntime':
        from .onnx_inference import onnx_inference
        latencies.update(onnx_inference(args))
    report = dict(config=vars(args), machine=describe(args.device), threads=torch.get_num_threads(),
                  inference=latencies, unmerged_forms=forms)
    if not args.inference_only:
        rows, profiles = training(args)
        report.update(training=rows, sizes=sizes_and_flops(args), switch_ms=switch_time(args))
        if profiles:
            report['op_breakdown'] = profiles
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / 'benchmark.json', 'w') as f:
        json.dump(report, f, indent=2)
    with atomic_write(out_dir / 'benchmark.md', 'w') as f:
        f.write(markdown(args, report))
    print(markdown(args, report))
