"""Measure what PETAH costs: inference latency, training step time, peak memory, sizes and FLOPs.

    python tools/analysis_tools/benchmark.py --arch l7 --size 224 --batch 8 --out-dir work_dirs/benchmark

One run measures, side by side (warm-up, then repeated runs, medians):

* inference latency of the plain backbone, merged PETAH-n and unmerged PETAH-n, as ratios to plain;
* a full training step (forward, backward, AdamW step; backbone + linear head) and the peak
  memory (the process's peak RSS; every method runs in a fresh process) for each method, as
  ratios to full fine-tuning;
* trainable backbone parameters, adapter file size and FLOPs (mmengine's complexity analysis,
  one multiply-add = one FLOP) of each method, merged and unmerged;
* the time to switch the shared backbone from one PETAH task to another (unmerge + merge);
* three ablations of PETAH-2 training, each undoing one of the adapter engine's optimisations.

It writes ``benchmark.md`` and ``benchmark.json`` to --out-dir.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from mmengine.analysis import get_model_complexity_info
from torch import nn

from petah_mm.adapters import adapted_layers
from petah_mm.models import DenseEfficientFormer, PETAHEfficientFormer
from petah_mm.utils import FrozenBatchNorm2d

METHODS = {
    'full': dict(method='full'),
    'attn_ft': dict(method='attn_ft'),
    'lora_attn': dict(method='lora_attn', rank=8),
    'petah1': dict(method='petah', conv_rank=1),
    'petah2': dict(method='petah', conv_rank=2),
    'frozen': dict(method='frozen'),
}
# What petah_mm's adapter engine does differently from a naive LoRA, undone one at a time:
# 'batchnorm': frozen BatchNorms stay F.batch_norm, which keeps its input for backward;
# 'branch': LoRA runs as the paper's Eq. (2), op(x, W) + B(A(x)), instead of the low-rank kernels;
# 'fused': LoRA trains by autograd through op(x, W + ΔW) instead of the low-rank kernels.
ABLATIONS = {'petah2 (BatchNorm kept)': ('petah2', 'batchnorm'), 'petah2 (two-layer branch)': ('petah2', 'branch'),
             'petah2 (autograd through W + ΔW)': ('petah2', 'fused')}
TRUNK = dict(out_indices=[3], reshape_last_feat=False)  # the classification trunk, as in the paper
NUM_CLASSES = 100


def backbone_for(arch, method=None):
    if method is None:
        return DenseEfficientFormer(arch=arch, **TRUNK)
    return PETAHEfficientFormer(arch=arch, adapter=METHODS[method], **TRUNK)


class Classifier(nn.Module):
    """Backbone + global average pooling + linear head: the training-step workload."""

    def __init__(self, backbone, channels):
        super().__init__()
        self.backbone, self.head = backbone, nn.Linear(channels, NUM_CLASSES)

    def forward(self, x):
        return self.head(self.backbone(x)[-1].mean(-1))


def randomise_adapters(backbone, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if '.adapter.' in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def median_ms(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def inference(args):
    """Latency of plain, merged and unmerged backbones, interleaved in rotating order so that drift
    and cache effects hit all alike."""
    x = torch.randn(args.batch, 3, args.size, args.size)
    models = {'plain': backbone_for(args.arch).eval()}
    for n in (1, 2):
        unmerged = backbone_for(args.arch, f'petah{n}').eval()
        randomise_adapters(unmerged)
        merged = backbone_for(args.arch, f'petah{n}').eval()
        merged.load_state_dict(unmerged.state_dict())
        merged.merge_adapters()
        models[f'petah{n} merged'], models[f'petah{n} unmerged'] = merged, unmerged
    times = {name: [] for name in models}
    names = list(models)
    with torch.no_grad():
        for model in models.values():
            for _ in range(args.warmup):
                model(x)
        for repeat in range(args.repeats):
            for name in names[repeat % len(names):] + names[:repeat % len(names)]:  # rotate the order
                start = time.perf_counter()
                models[name](x)
                times[name].append(1e3 * (time.perf_counter() - start))
    medians = {name: statistics.median(t) for name, t in times.items()}
    return {name: dict(ms=ms, ratio=ms / medians['plain']) for name, ms in medians.items()}


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


def train_worker(args):
    """One method's training step in this (fresh) process; prints JSON."""
    torch.manual_seed(0)
    backbone = backbone_for(args.arch, args.method)
    undo(backbone, args.ablation)
    model = Classifier(backbone, backbone.embed_dims[-1]).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = torch.randint(0, NUM_CLASSES, (args.batch, ))
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step():
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    ms = median_ms(step, args.warmup, args.repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps(dict(ms=ms, peak_gb=peak / 2**20, model_gb=baseline / 2**20)))


def training(args):
    results = {}
    runs = {**{m: (m, 'none') for m in METHODS}, **ABLATIONS}
    for name, (method, ablation) in runs.items():
        cmd = [sys.executable, __file__, '--worker', '--method', method, '--ablation', ablation, '--arch',
               args.arch, '--size', str(args.size), '--batch', str(args.batch), '--warmup', str(args.warmup),
               '--repeats', str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f'training benchmark of {name} failed:\n{proc.stderr[-2000:]}')
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    full = results['full']
    for r in results.values():
        r.update(time_ratio=r['ms'] / full['ms'], memory_ratio=r['peak_gb'] / full['peak_gb'])
    return results


def gflops(model, shape):
    with torch.no_grad():  # inference FLOPs; the trace sees the ops an unmerged forward runs
        return get_model_complexity_info(model, input_shape=shape, show_table=False, show_arch=False)['flops'] / 1e9


def sizes_and_flops(args):
    results = {}
    shape = (3, args.size, args.size)
    for method in METHODS:
        backbone = backbone_for(args.arch, method).eval()
        with tempfile.TemporaryDirectory() as tmp:
            size = backbone.save_adapter(Path(tmp) / 'adapter.safetensors')
        unmerged = gflops(backbone, shape)
        backbone.merge_adapters()
        results[method] = dict(trainable=sum(backbone.trainable_by_group().values()), adapter_mb=size / 1e6,
                               gflops_unmerged=unmerged, gflops_merged=gflops(backbone, shape))
    return results


def switch_time(args):
    """A task switch in merge mode: unmerge one PETAH-2 adapter set, merge another (same cost)."""
    backbone = backbone_for(args.arch, 'petah2')
    randomise_adapters(backbone)
    backbone.merge_adapters()

    def switch():
        backbone.unmerge_adapters()
        backbone.merge_adapters()

    return median_ms(switch, args.warmup, args.repeats)


def markdown(args, report) -> str:
    inf, train, sizes = report['inference'], report['training'], report['sizes']
    lines = [f'EfficientFormer-{args.arch.upper()}, {args.size}x{args.size}, batch {args.batch}, '
             f'{torch.get_num_threads()} CPU threads, median of {args.repeats} runs after {args.warmup} warm-up runs.',
             '', '| inference | latency (ms) | ÷ plain |', '|---|---|---|']
    lines += [f'| {name} | {r["ms"]:.1f} | {r["ratio"]:.3f} |' for name, r in inf.items()]
    lines += ['', '| method | train step (ms) | ÷ full | peak memory (GB) | ÷ full | trainable params | '
              'adapter file (MB) | GFLOPs merged | GFLOPs unmerged |', '|---|---|---|---|---|---|---|---|---|']
    for name, r in train.items():
        s = sizes[ABLATIONS.get(name, (name, ))[0]]
        lines.append(f'| {name} | {r["ms"]:.0f} | {r["time_ratio"]:.2f} | {r["peak_gb"]:.2f} | '
                     f'{r["memory_ratio"]:.2f} | {s["trainable"]:,} | {s["adapter_mb"]:.2f} | '
                     f'{s["gflops_merged"]:.2f} | {s["gflops_unmerged"]:.2f} |')
    lines += ['', f'Switching the shared kernels between two PETAH-2 tasks (unmerge + merge): '
              f'{report["switch_ms"]:.1f} ms.']
    return '\n'.join(lines) + '\n'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='l7', choices=['l1', 'l3', 'l7'])
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--out-dir', default='work_dirs/benchmark')
    parser.add_argument('--worker', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--method', choices=list(METHODS), help=argparse.SUPPRESS)
    parser.add_argument('--ablation', choices=['none', 'batchnorm', 'branch', 'fused'], default='none', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return train_worker(args)
    report = dict(config=vars(args), threads=torch.get_num_threads(), inference=inference(args),
                  training=training(args), sizes=sizes_and_flops(args), switch_ms=switch_time(args))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / 'benchmark.json').write_text(json.dumps(report, indent=2))
    (out_dir / 'benchmark.md').write_text(markdown(args, report))
    print(markdown(args, report))


if __name__ == '__main__':
    main()
