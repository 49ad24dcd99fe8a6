"""The benchmark's markdown table."""
import torch

from petah_mm.adapters.form_choice import summary_text
from petah_mm.utils import machine
from . import op_breakdown


def markdown(args, report) -> str:
    inf = report['inference']
    device = (f'{torch.get_num_threads()} CPU threads' if args.device == 'cpu' else
              torch.cuda.get_device_name(args.device))
    memory = 'peak RSS' if args.device == 'cpu' else 'max allocated'
    training = ('' if 'training' not in report else
                f'training: fastest of {args.rounds} round(s) of each method\'s median of {args.repeats} steps '
                '(peak memory: median over rounds); ')
    lines = [f'{args.config or f"EfficientFormer-{args.arch.upper()} trunk"}, {args.size}x{args.size}, '
             + ('' if 'training' not in report else f'training batch {args.batch}, ')
             + f'{device}. Inference: median of {args.repeats * args.rounds} interleaved runs; {training}'
             f'{args.warmup} warm-up runs each.',
             machine.summary(report['machine']), '',
             '| inference | latency (ms) | ÷ plain | ÷ merged |', '|---|---|---|---|']
    lines += [f'| {name} | {r["ms"]:.1f} | {r["ratio"]:.3f} | '
              + (f'{r["ratio_to_merged"]:.3f} |' if 'ratio_to_merged' in r else '|') for name, r in inf.items()]
    lines += forms_lines(report.get('unmerged_forms', {}))
    if 'training' in report:
        lines += training_lines(report, memory)
    return '\n'.join(lines) + '\n'


def forms_lines(forms: dict) -> list:
    """How each unmerged row chose its LoRA layers' inference forms."""
    lines = [f'- {name}: {summary_text(summary)}' for name, summary in forms.items()]
    return ['', 'Unmerged LoRA inference forms:'] + lines if lines else []


def training_lines(report, memory: str) -> list:
    train, sizes = report['training'], report['sizes']
    lines = ['', f'| method | train step (ms) | ÷ full | peak memory, {memory} (GB) | ÷ full | trainable params | '
             'adapter file (MB) | GFLOPs merged | GFLOPs unmerged |', '|---|---|---|---|---|---|---|---|---|']
    for name, r in train.items():
        s = sizes[r['method']]
        lines.append(f'| {name} | {r["ms"]:.0f} | {r.get("time_ratio", float("nan")):.2f} | {r["peak_gb"]:.2f} | '
                     f'{r.get("memory_ratio", float("nan")):.2f} | {s["trainable"]:,} | {s["adapter_mb"]:.2f} | '
                     f'{s["gflops_merged"]:.2f} | {s["gflops_unmerged"]:.2f} |')
    for name, r in train.items():
        if 'time_margin' in r:
            lines.append(f'\n{name}: petah2 trains {r["time_margin"]:.2f}x as fast ({r["median_time_margin"]:.2f}x '
                         f'by the median rounds, {r["paired_time_margin"]:.2f}x by the median ratio within a round), '
                         f'with {r["memory_margin"]:.2f}x less peak memory '
                         f'({r["step_memory_margin"]:.2f}x less memory of the step itself).')
    lines += ['', f'Switching the shared kernels between two PETAH-2 tasks (unmerge + merge): '
              f'{report["switch_ms"]:.1f} ms.']
    if 'op_breakdown' in report:
        lines += op_breakdown.markdown(report['op_breakdown'])
    return lines
