"""Training step time and peak memory of each method, each in a fresh worker process."""
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

from petah_mm.utils.timing import median_ms, rotated
from .ablations import ABLATIONS, PEFT_ROW, undo
from .common import NUM_CLASSES, Classifier, autocast, backbone_for, precisions, row_name
from .op_breakdown import PROFILED, breakdown_precision, profiled_ops


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
    measured = dict(ms=ms, peak_gb=peak_memory_gb(args.device), model_gb=baseline)
    if args.profile:
        measured['ops'] = profiled_ops(step, args.device)
    print(json.dumps(measured))


def worker_command(args, method, ablation, precision):
    cmd = [sys.executable, '-m', __package__, '--worker', '--method', method, '--ablation', ablation, '--precision',
           precision, '--arch', args.arch, '--size', str(args.size), '--batch', str(args.batch), '--warmup',
           str(args.warmup), '--repeats', str(args.repeats), '--device', args.device]
    return cmd + (['--config', args.config] if args.config else [])


def summarise_rounds(measured):
    """A method's rounds: the fastest step time, the median of the rest. Other tenants of a shared VM only
    ever add time, in bursts minutes long (one run read frozen bf16 at 3.4, 3.7 and 8.4 s): a median over
    three rounds needs two undisturbed ones, the minimum one."""
    summary = {key: statistics.median(m[key] for m in measured) for key in measured[0]}
    return dict(summary, ms=min(m['ms'] for m in measured), ms_by_round=[m['ms'] for m in measured])


def peer_margins(peft: dict, petah: dict) -> dict:
    """How much faster and leaner petah2 trains than peft on the same targets: peft's over petah2's step time
    (fastest rounds; median rounds; and the median of each round's ratio, since the two run back to back in a
    round: a shared VM's drift between processes can exceed the margin), peak memory, and the step's own memory
    (peak over the process's size before the first step: peft's worker also imports transformers)."""
    paired = [peft_ms / petah_ms for peft_ms, petah_ms in zip(peft['ms_by_round'], petah['ms_by_round'])]
    return dict(time_margin=peft['ms'] / petah['ms'],
                median_time_margin=statistics.median(peft['ms_by_round']) / statistics.median(petah['ms_by_round']),
                paired_time_margin=statistics.median(paired),
                memory_margin=peft['peak_gb'] / petah['peak_gb'],
                step_memory_margin=(peft['peak_gb'] - peft['model_gb']) / (petah['peak_gb'] - petah['model_gb']))


def training(args):
    """Each method's step in a fresh process, in ``--rounds`` rounds of all methods in rotating order, so that
    a slow spell of the machine does not fall on one method's every round. Returns the rows, and with
    ``--op-breakdown`` the profiled ops of full and PETAH-2 (else an empty dict)."""
    runs = {m: (m, 'none') for m in args.methods}
    if 'petah2' in args.methods:
        runs.update({name: run for name, run in ABLATIONS.items() if run[1] in args.ablations})
    if args.peft:
        runs.update(PEFT_ROW)
    rounds = {row_name(name, precision): [] for precision in precisions(args) for name in runs}
    profiles = {}
    for round_index in range(args.rounds):
        for precision in precisions(args):
            for name in rotated(list(runs), round_index):
                method, ablation = runs[name]
                command = worker_command(args, method, ablation, precision)
                # --op-breakdown: the first round's worker profiles one more step after its timed ones
                profile = args.op_breakdown and round_index == 0 and name in PROFILED and \
                    precision == breakdown_precision(args)
                proc = subprocess.run(command + ['--profile'] * profile, capture_output=True, text=True)
                if proc.returncode:
                    raise RuntimeError(f'training benchmark of {row_name(name, precision)} failed:\n'
                                       f'{proc.stderr[-2000:]}')
                measured = json.loads(proc.stdout.strip().splitlines()[-1])
                if profile:
                    profiles[name] = measured.pop('ops')
                rounds[row_name(name, precision)].append(measured)
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
        for name in PEFT_ROW if args.peft else ():
            results[row_name(name, precision)].update(peer_margins(results[row_name(name, precision)],
                                                                   results[row_name('petah2', precision)]))
    return results, profiles and dict(profiles, precision=breakdown_precision(args))
