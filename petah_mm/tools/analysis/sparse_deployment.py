"""Storage and CPU latency of the two deployments of a Sparse-PETAH backbone (PETAH Sec. 5.1).

    python tools/analysis_tools/sparse_deployment.py                         # EF-L7, 90%, PETAH-2
    python tools/analysis_tools/sparse_deployment.py --arch l1 --repeats 2   # smoke test

A frozen backbone is magnitude-pruned (random weights: no download needed, and sizes and
latency do not depend on the values) and gets PETAH adapters with random, training-like values:
* unmerged: the compact sparse base (values + bitmask) plus the task's adapter file; each adapted
  layer adds its ΔW to the sparse base in every forward (W + ΔW or the thin form, whichever is cheaper);
* merged: W + ΔW folded into the kernels, a dense checkpoint that runs as a plain backbone. ΔW
  fills the pruned entries, so every adapted kernel is dense again (only the Meta3D MLP linears,
  which PETAH does not adapt, stay sparse).
Both deployments are loaded back from their files before they are timed. Latency is the median of
``--repeats`` forward passes after ``--warmup`` ones, the two deployments timed in alternation so that the
machine's drift hits both alike: measure on a quiet machine. Writes
``sparse_deployment.md`` and ``sparse_deployment.json`` to ``--out-dir``.
"""
import argparse
import functools
import json
import tempfile
from pathlib import Path

import torch

from petah_mm.adapters import is_adapter_key
from petah_mm.models import DenseEfficientFormer, PETAHEfficientFormer
from petah_mm.sparse import (SCOPES, prunable_weights, prune_, read_checkpoint, read_packed, sparsity_by_kind,
                             weight_kinds, write_checkpoint, write_packed)
from petah_mm.utils import atomic_write, machine
from petah_mm.utils.timing import interleaved_medians_ms

TRUNK = dict(out_indices=[3], reshape_last_feat=False)  # the classification trunk, as in PETAH Table 5


def petah_backbone(args) -> PETAHEfficientFormer:
    return PETAHEfficientFormer(arch=args.arch, adapter=dict(method='petah', rank=args.rank, conv_rank=args.conv_rank),
                                **TRUNK)


@torch.no_grad()
def write_artifacts(args, directory: Path) -> dict:
    """A pruned, adapted backbone written as both deployments; returns the file sizes in bytes."""
    torch.manual_seed(args.seed)
    model = petah_backbone(args).eval()
    prune_(model, args.sparsity, args.scope)  # adapter factors are not conv/linear modules: only the base is pruned
    for name, param in model.named_parameters():
        if name in model.task_param_names:
            param.normal_(0., 0.02)
    base = {k: v for k, v in model.state_dict().items() if k not in model.task_state_dict()}
    meta = dict(arch=args.arch, sparsity=args.sparsity, scope=args.scope)
    sizes = dict(base_dense=write_checkpoint(directory / 'base.pth', base, meta),
                 base_compact=write_packed(directory / 'base.safetensors', base, meta),
                 adapter=model.save_adapter(directory / 'adapter.safetensors'))
    model.merge_adapters()
    merged = {k: v for k, v in model.state_dict().items() if not is_adapter_key(k)}
    sizes['merged_dense'] = write_checkpoint(directory / 'merged.pth', merged, meta)
    return sizes


def load_deployments(args, directory: Path):
    """(unmerged, merged) backbones, each built from its files only."""
    unmerged = petah_backbone(args)
    result = unmerged.load_state_dict(read_packed(directory / 'base.safetensors')[0], strict=False)
    if result.unexpected_keys or set(result.missing_keys) != set(unmerged.task_state_dict()):
        raise RuntimeError(f'compact base does not fit the model: {result}')
    unmerged.load_adapter(directory / 'adapter.safetensors')  # checks the base's fingerprint: bit-exact unpacking
    merged = DenseEfficientFormer(arch=args.arch, **TRUNK)
    merged.load_state_dict(read_checkpoint(directory / 'merged.pth')[0])
    return unmerged.eval(), merged.eval()


def markdown(report: dict) -> str:
    cfg, mb = report['config'], {k: v / 1e6 for k, v in report['sizes_bytes'].items()}
    lines = [
        f'# Sparse-PETAH deployment: EfficientFormer-{cfg["arch"].upper()}, {cfg["sparsity"]:.0%} sparse '
        f'({cfg["scope"]} magnitude pruning), PETAH (rank {cfg["rank"]}, conv rank {cfg["conv_rank"]})', '',
        '## Storage per task', '', '| deployment | file | MB |', '|---|---|---:|',
        f'| unmerged | sparse base, compact (values + bitmask, safetensors) | {mb["base_compact"]:.2f} |',
        f'| unmerged | adapter (safetensors) | {mb["adapter"]:.2f} |',
        f'| unmerged | **total** | **{mb["base_compact"] + mb["adapter"]:.2f}** |',
        f'| merged | **dense checkpoint (.pth)** | **{mb["merged_dense"]:.2f}** |',
        f'| reference | sparse base as a dense checkpoint (.pth) | {mb["base_dense"]:.2f} |', '',
        'For N tasks on one device: unmerged = base + N x adapter, merged = N x dense checkpoint.', '',
        '## Conv/linear sparsity', '', '| layer kind | sparse base | merged |', '|---|---:|---:|']
    lines += [f'| {kind} | {row["base"]:.2%} | {row["merged"]:.2%} |' for kind, row in report['sparsity'].items()]
    lines += ['', f'## CPU latency, {cfg["size"]}x{cfg["size"]} (median of {cfg["repeats"]} after {cfg["warmup"]} '
              f'warm-up runs, {report["torch_threads"]} threads, torch {report["torch_version"]})', '',
              machine.summary(report['machine']), '',
              '| batch | unmerged (ms) | merged (ms) | unmerged / merged |', '|---:|---:|---:|---:|']
    lines += [f'| {r["batch"]} | {r["unmerged"]:.1f} | {r["merged"]:.1f} | {r["unmerged"] / r["merged"]:.2f} |'
              for r in report['latency_ms']]
    lines += ['', f'Max |unmerged - merged| output difference: {report["max_abs_diff"]:.2e}.']
    return '\n'.join(lines) + '\n'


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='l7', choices=sorted(PETAHEfficientFormer.arch_settings))
    parser.add_argument('--sparsity', type=float, default=0.9)
    parser.add_argument('--scope', choices=SCOPES, default='layer')
    parser.add_argument('--rank', type=int, default=8, help='attention LoRA rank')
    parser.add_argument('--conv-rank', type=int, default=2, help='convolutional LoRA rank (2: PETAH-2)')
    parser.add_argument('--size', type=int, default=224, help='input height and width')
    parser.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 8])
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s choice)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out-dir', type=Path, default=Path('work_dirs/sparse_deployment'))
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        parser.error('--repeats and --threads must be >= 1, --warmup >= 0')
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.out_dir) as tmp:
        sizes = write_artifacts(args, Path(tmp))
        unmerged, merged = load_deployments(args, Path(tmp))
    kinds = weight_kinds(unmerged)
    base_table = sparsity_by_kind(prunable_weights(unmerged), kinds)
    merged_table = sparsity_by_kind(prunable_weights(merged), kinds)
    sparsity = {kind: dict(base=zeros / numel, merged=merged_table[kind][0] / numel)
                for kind, (zeros, numel) in base_table.items()}
    latency, max_abs_diff = [], 0.
    for batch in args.batch_sizes:
        x = torch.randn(batch, 3, args.size, args.size)
        with torch.inference_mode():
            max_abs_diff = max(max_abs_diff, (unmerged(x)[0] - merged(x)[0]).abs().max().item())
            latency.append(dict(batch=batch, **interleaved_medians_ms(
                dict(unmerged=functools.partial(unmerged, x), merged=functools.partial(merged, x)), args.warmup,
                args.repeats)))

    report = dict(config={k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  machine=machine.describe('cpu'), torch_version=torch.__version__,
                  torch_threads=torch.get_num_threads(), sizes_bytes=sizes,
                  sparsity=sparsity, latency_ms=latency, max_abs_diff=max_abs_diff)
    text = markdown(report)
    with atomic_write(args.out_dir / 'sparse_deployment.json', 'w') as f:
        json.dump(report, f, indent=2)
    with atomic_write(args.out_dir / 'sparse_deployment.md', 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    main()
