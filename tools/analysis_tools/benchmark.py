"""Measure what PETAH costs: inference latency, training step time, peak memory, sizes and FLOPs.

    python tools/analysis_tools/benchmark.py --arch l7 --size 224 --batch 8 --out-dir work_dirs/benchmark
    python tools/analysis_tools/benchmark.py --amp --inference-batches 1 8  # + bf16 rows (fp16 on CUDA), batches 1, 8
    python tools/analysis_tools/benchmark.py --config CONFIG          # that config's model.backbone
    python tools/analysis_tools/benchmark.py --device cuda --amp

One run measures, side by side (warm-up, then repeated runs, medians; ``--rounds`` repeats the
training rows in rotating order, each in a fresh process, and keeps each method's fastest round):

* inference latency of the plain backbone, merged PETAH-n and unmerged PETAH-n, as ratios to plain
  (and unmerged to merged), at each batch of ``--inference-batches``;
* a full training step (forward, backward, AdamW step; backbone + linear head) and the peak
  memory for each method, as ratios to full fine-tuning. On the CPU the peak is the process's
  peak RSS (every method runs in a fresh process); on CUDA it is ``torch.cuda.max_memory_allocated``
  and the timings synchronise the device;
* trainable backbone parameters, adapter file size and FLOPs (mmengine's complexity analysis with
  gradients enabled, as the libraries' ``get_flops.py`` run it; one multiply-add = one FLOP) of
  each method, merged and unmerged;
* the time to switch the shared backbone from one PETAH task to another (unmerge + merge);
* three ablations of PETAH-2 training, each undoing one of the adapter engine's optimisations.

With ``--amp`` every inference and training row is measured again under autocast in the dtype that
``tools/train.py --amp`` trains with on the device: bf16 on the CPU, fp16 on CUDA (rows marked "bf16" or
"fp16", training ratios to full fine-tuning in that dtype). The methods are the adapter presets of
``petah_mm.adapters.presets``; the backbone is the EfficientFormer classification trunk, or
``model.backbone`` of ``--config`` with random weights (its ``init_cfg`` is dropped: nothing is
downloaded, and time and memory do not depend on the values). It writes ``benchmark.md`` and
``benchmark.json`` to --out-dir.
"""
import argparse
import functools
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import torch
from mmengine.analysis import get_model_complexity_info
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

import petah_mm  # noqa: F401  (registers the backbones)
from petah_mm.adapters import adapted_layers
from petah_mm.adapters.presets import PRESETS, preset
from petah_mm.models import without_pretrained
from petah_mm.utils import FrozenBatchNorm2d, atomic_write
from petah_mm.utils.timing import interleaved_medians_ms, median_ms, rotated

DEFAULT_METHODS = ['full', 'attn-ft', 'lora-attn-r8', 'petah1', 'petah2', 'frozen']
# What petah_mm's adapter engine does differently from a naive LoRA, undone one at a time:
# 'batchnorm': frozen BatchNorms stay F.batch_norm, which keeps its input for backward;
# 'branch': LoRA runs as the paper's Eq. (2), op(x, W) + B(A(x)), instead of the low-rank kernels;
# 'fused': LoRA trains by autograd through op(x, W + ΔW) instead of the low-rank kernels.
ABLATIONS = {'petah2 (BatchNorm kept)': ('petah2', 'batchnorm'), 'petah2 (two-layer branch)': ('petah2', 'branch'),
             'petah2 (autograd through W + ΔW)': ('petah2', 'fused')}
TRUNK = dict(out_indices=[3], reshape_last_feat=False)  # the classification trunk, as in the paper
NUM_CLASSES = 100
PRECISIONS = {'fp32': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
# --amp measures what tools/train.py --amp trains with: BF16OptimWrapper on the CPU, AmpOptimWrapper's fp16 on
# CUDA (bf16 autocast also raises on GPUs without bf16, e.g. T4 and V100 with torch 2.1)
AMP_PRECISION = {'cpu': 'bf16', 'cuda': 'fp16'}


def backbone_cfg(args) -> dict:
    """``model.backbone`` of --config loading no weights, or the EfficientFormer trunk."""
    if args.config is None:
        return dict(type='PETAHEfficientFormer', arch=args.arch, **TRUNK)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmengine'))
    backbone = cfg.get('model', {}).get('backbone')
    if backbone is None or 'adapter' not in backbone:
        raise KeyError(f'{args.config} has no model.backbone with an adapter=dict(...) argument; '
                       'benchmark.py switches methods through that argument')
    return without_pretrained(backbone.to_dict())


def backbone_for(args, method: str):
    backbone = MODELS.build(dict(backbone_cfg(args), adapter=preset(method)))
    return backbone.to(args.device)


class Classifier(nn.Module):
    """Backbone + global average pooling + linear head: the training-step workload."""

    def __init__(self, backbone, channels):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(channels, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].flatten(2).mean(-1))


def randomise_adapters(backbone, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if '.adapter.' in name:
                p.copy_(torch.randn(p.shape, generator=g).to(p.device) * 0.02)


def autocast(args, precision):
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(torch.device(args.device).type, dtype=dtype)


def precisions(args):
    return ['fp32', AMP_PRECISION[torch.device(args.device).type]] if args.amp else ['fp32']


def row_name(name, precision):
    return name if precision == 'fp32' else f'{name} ({precision})'


def inference(args):
    """Latency of plain, merged and unmerged backbones at each of --inference-batches, interleaved in
    rotating order so that drift and cache effects hit all alike."""
    models = {'plain': backbone_for(args, 'frozen').eval()}
    for n in (1, 2):
        unmerged = backbone_for(args, f'petah{n}').eval()
        randomise_adapters(unmerged)
        merged = backbone_for(args, f'petah{n}').eval()
        merged.load_state_dict(unmerged.state_dict())
        merged.merge_adapters()
        models[f'petah{n} merged'], models[f'petah{n} unmerged'] = merged, unmerged
    results = {}
    for batch, precision in itertools.product(args.inference_batches, precisions(args)):
        x = torch.randn(batch, 3, args.size, args.size, device=args.device)
        with torch.no_grad(), autocast(args, precision):
            medians = interleaved_medians_ms({name: functools.partial(model, x) for name, model in models.items()},
                                             args.warmup, args.repeats * args.rounds, args.device)
        for name, ms in medians.items():
            row = dict(batch=batch, ms=ms, ratio=ms / medians['plain'])
            if name.endswith(' unmerged'):
                row['ratio_to_merged'] = ms / medians[name.replace(' unmerged', ' merged')]
            results[row_name(f'{name}, batch {batch}', precision)] = row
    return results


def undo(backbone, ablation):
    """Switch one of the engine's optimisations off, for the ablation rows."""
    if ablation == 'batchnorm':
        for module in backbone.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.__class__ = nn.BatchNorm2d
    elif ablation in ('branch', 'fused'):
        for layer in adapted_layers(backbone).values():
            adapter = layer.adapter  # an instance attribute shadows the method
            adapter.adapted_forward = adapter.branch_forward if ablation == 'branch' else adapter.fused_forward


def peak_memory_gb(device) -> float:
    """CUDA's max allocated, or this process's peak RSS: /proc's VmHWM on Linux, because ``ru_maxrss``
    keeps across exec the peak of the forked parent (the benchmark, holding the inference models)."""
    if torch.device(device).type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**30
    status = Path('/proc/self/status')
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines()
                    if line.startswith('VmHWM:')) / 2**20  # KiB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, bytes on macOS
    return peak / (2**30 if sys.platform == 'darwin' else 2**20)


def train_worker(args):
    """One method's training step in this (fresh) process; prints JSON."""
    torch.manual_seed(0)
    backbone = backbone_for(args, args.method)
    undo(backbone, args.ablation)
    x = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    with torch.no_grad():
        channels = backbone(x[:1])[-1].shape[1]
    model = Classifier(backbone, channels).to(args.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    y = torch.randint(0, NUM_CLASSES, (args.batch, ), device=args.device)
    baseline = peak_memory_gb(args.device)
    if torch.device(args.device).type == 'cuda':
        torch.cuda.reset_peak_memory_stats(args.device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast(args, args.precision):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    ms = median_ms(step, args.warmup, args.repeats, args.device)
    print(json.dumps(dict(ms=ms, peak_gb=peak_memory_gb(args.device), model_gb=baseline)))


def worker_command(args, method, ablation, precision):
    cmd = [sys.executable, __file__, '--worker', '--method', method, '--ablation', ablation, '--precision', precision,
           '--arch', args.arch, '--size', str(args.size), '--batch', str(args.batch), '--warmup', str(args.warmup),
           '--repeats', str(args.repeats), '--device', args.device]
    return cmd + (['--config', args.config] if args.config else [])


def summarise_rounds(measured):
    """A method's rounds: the fastest step time, the median of the rest. Other tenants of a shared VM only
    ever add time, in bursts minutes long (one run read frozen bf16 at 3.4, 3.7 and 8.4 s): a median over
    three rounds needs two undisturbed ones, the minimum one."""
    summary = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
    return dict(summary, ms=min(m['ms'] for m in measured), ms_by_round=[m['ms'] for m in measured])


def training(args):
    """Each method's step in a fresh process, in ``--rounds`` rounds of all methods in rotating order, so that
    a slow spell of the machine does not fall on one method's every round."""
    runs = {m: (m, 'none') for m in args.methods}
    if 'petah2' in args.methods and not args.skip_ablations:
        runs.update(ABLATIONS)
    rounds = {row_name(name, precision): [] for precision in precisions(args) for name in runs}
    for round_index in range(args.rounds):
        for precision in precisions(args):
            for name in rotated(list(runs), round_index):
                method, ablation = runs[name]
                proc = subprocess.run(worker_command(args, method, ablation, precision), capture_output=True,
                                      text=True)
                if proc.returncode:
                    raise RuntimeError(f'training benchmark of {row_name(name, precision)} failed:\n'
                                       f'{proc.stderr[-2000:]}')
                rounds[row_name(name, precision)].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    results = {}
    for precision in precisions(args):
        for name, (method, _) in runs.items():
            results[row_name(name, precision)] = dict(summarise_rounds(rounds[row_name(name, precision)]),
                                                      method=method)
        full = results.get(row_name('full', precision))
        for name in runs:
            r = results[row_name(name, precision)]
            if full is not None:
                r.update(time_ratio=r['ms'] / full['ms'], memory_ratio=r['peak_gb'] / full['peak_gb'])
    return results


def gflops(model, shape):
    """With gradients enabled, as mmdet's and mmpretrain's get_flops.py count."""
    return get_model_complexity_info(model, input_shape=shape, show_table=False, show_arch=False)['flops'] / 1e9


def sizes_and_flops(args):
    results = {}
    shape = (3, args.size, args.size)
    for method in args.methods:
        backbone = backbone_for(args, method).cpu().eval()
        with tempfile.TemporaryDirectory() as tmp:
            size = backbone.save_adapter(Path(tmp) / 'adapter.safetensors')
        unmerged = gflops(backbone, shape)
        backbone.merge_adapters()
        results[method] = dict(trainable=sum(backbone.trainable_by_group().values()), adapter_mb=size / 1e6,
                               gflops_unmerged=unmerged, gflops_merged=gflops(backbone, shape))
    return results


def switch_time(args):
    """A task switch in merge mode: unmerge one PETAH-2 adapter set, merge another (same cost)."""
    backbone = backbone_for(args, 'petah2')
    randomise_adapters(backbone)
    backbone.merge_adapters()

    def switch():
        backbone.unmerge_adapters()
        backbone.merge_adapters()

    return median_ms(switch, args.warmup, args.repeats, args.device)


def markdown(args, report) -> str:
    inf, train, sizes = report['inference'], report['training'], report['sizes']
    device = (f'{torch.get_num_threads()} CPU threads' if args.device == 'cpu' else
              torch.cuda.get_device_name(args.device))
    memory = 'peak RSS' if args.device == 'cpu' else 'max allocated'
    lines = [f'{args.config or f"EfficientFormer-{args.arch.upper()} trunk"}, {args.size}x{args.size}, '
             f'training batch {args.batch}, {device}. Inference: median of {args.repeats * args.rounds} interleaved '
             f'runs; training: fastest of {args.rounds} round(s) of each method\'s median of {args.repeats} steps '
             f'(peak memory: median over rounds); {args.warmup} warm-up runs each.',
             '', '| inference | latency (ms) | ÷ plain | ÷ merged |', '|---|---|---|---|']
    lines += [f'| {name} | {r["ms"]:.1f} | {r["ratio"]:.3f} | '
              + (f'{r["ratio_to_merged"]:.3f} |' if 'ratio_to_merged' in r else '|') for name, r in inf.items()]
    lines += ['', f'| method | train step (ms) | ÷ full | peak memory, {memory} (GB) | ÷ full | trainable params | '
              'adapter file (MB) | GFLOPs merged | GFLOPs unmerged |', '|---|---|---|---|---|---|---|---|---|']
    for name, r in train.items():
        s = sizes[r['method']]
        lines.append(f'| {name} | {r["ms"]:.0f} | {r.get("time_ratio", float("nan")):.2f} | {r["peak_gb"]:.2f} | '
                     f'{r.get("memory_ratio", float("nan")):.2f} | {s["trainable"]:,} | {s["adapter_mb"]:.2f} | '
                     f'{s["gflops_merged"]:.2f} | {s["gflops_unmerged"]:.2f} |')
    lines += ['', f'Switching the shared kernels between two PETAH-2 tasks (unmerge + merge): '
              f'{report["switch_ms"]:.1f} ms.']
    return '\n'.join(lines) + '\n'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--config', help='benchmark model.backbone of this mmdet/mmseg/mmpretrain config')
    parser.add_argument('--arch', default='l7', choices=['l1', 'l3', 'l7'], help='without --config')
    parser.add_argument('--methods', nargs='+', default=DEFAULT_METHODS, choices=list(PRESETS),
                        help='adapter presets to compare (full is the reference of the ratios)')
    parser.add_argument('--skip-ablations', action='store_true', help='skip the three PETAH-2 ablation rows')
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
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--method', choices=list(PRESETS), help=argparse.SUPPRESS)
    parser.add_argument('--precision', choices=list(PRECISIONS), default='fp32', help=argparse.SUPPRESS)
    parser.add_argument('--ablation', choices=['none', 'batchnorm', 'branch', 'fused'], default='none',
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device.split(':')[0] not in AMP_PRECISION:
        parser.error(f"--device {args.device}: expected 'cpu', 'cuda' or 'cuda:N'")
    if torch.device(args.device).type == 'cuda' and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch sees no CUDA device here (torch {torch.__version__}); '
                     'run on a GPU machine with a CUDA build of torch, or use --device cpu')
    args.inference_batches = args.inference_batches or [args.batch]
    if args.rounds < 1 or args.repeats < 1:
        parser.error(f'--rounds {args.rounds} --repeats {args.repeats}: both must be at least 1')
    if 'petah2' not in args.methods:
        parser.error('--methods must include petah2: the inference and task-switch rows measure it')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return train_worker(args)
    report = dict(config=vars(args), threads=torch.get_num_threads(), inference=inference(args),
                  training=training(args), sizes=sizes_and_flops(args), switch_ms=switch_time(args))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / 'benchmark.json', 'w') as f:
        json.dump(report, f, indent=2)
    with atomic_write(out_dir / 'benchmark.md', 'w') as f:
        f.write(markdown(args, report))
    print(markdown(args, report))


if __name__ == '__main__':
    main()
