"""Where a training step's time goes, op by op: full fine-tuning against PETAH-2, from torch's profiler.

The step-time ratio says how much cheaper PETAH-2 trains; this table says why, and which ops an adapter adds
(the W + ΔW builds, the thin low-rank gradient products, casts). On a CPU without native bf16 the bf16 rows
are dominated by emulated GEMMs and convolutions; the ops' table still shows the adapters' own share.
"""
import torch
from torch.profiler import ProfilerActivity, profile

from .common import AMP_PRECISION

#: ops per method kept in the report, by self time
TOP_OPS = 25
#: the methods whose steps the breakdown compares
PROFILED = ('full', 'petah2')


def profiled_ops(step, device) -> list:
    """Self time and calls of each op in one ``step()`` (after the timed steps warmed it up)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == 'cuda' else [])
    with profile(activities=activities) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [dict(op=e.key, self_ms=e.self_cpu_time_total / 1e3, calls=e.count) for e in events[:TOP_OPS]]


def breakdown_precision(args) -> str:
    """The dtype the breakdown profiles: the --amp one if given (where the adapters' cost shows), else fp32."""
    return AMP_PRECISION[torch.device(args.device).type] if args.amp else 'fp32'


def markdown(breakdown: dict) -> list:
    """Side by side, the ops that cost most in either method's step (self CPU time, ms)."""
    full, petah = ({r['op']: r for r in breakdown[m]} for m in PROFILED)

    def cost(op):
        return max(rows[op]['self_ms'] for rows in (full, petah) if op in rows)

    ops = sorted(set(full) | set(petah), key=cost, reverse=True)

    def cell(rows, op):
        return f'{rows[op]["self_ms"]:.1f} ({rows[op]["calls"]})' if op in rows else '-'

    lines = ['', f'Op breakdown of one {breakdown["precision"]} training step (self CPU time in ms, calls; '
             f'the top {TOP_OPS} of each method):', '', '| op | full | petah2 |', '|---|---|---|']
    lines += [f'| {op} | {cell(full, op)} | {cell(petah, op)} |' for op in ops]
    totals = [sum(r['self_ms'] for r in rows.values()) for rows in (full, petah)]
    lines.append(f'| total of these | {totals[0]:.1f} | {totals[1]:.1f} |')
    return lines
