"""Measure what PETAH costs: inference latency, training step time, peak memory, sizes and FLOPs.

    python tools/analysis_tools/benchmark.py --arch l7 --size 224 --batch 8 --out-dir work_dirs/benchmark
    python tools/analysis_tools/benchmark.py --amp --inference-batches 1 8  # + bf16 rows (fp16 on CUDA), batches 1, 8
    python tools/analysis_tools/benchmark.py --config CONFIG          # that config's model.backbone
    python tools/analysis_tools/benchmark.py --device cuda --amp
    python tools/analysis_tools/benchmark.py --methods full petah2 petah2-dora petah2-lokr  # other presets' rows

What each row measures, and how, is documented in :mod:`petah_mm.analysis.benchmark`, which holds one
module per job (inference, training, sizes, switch, ablations, report).
"""
from petah_mm.analysis.benchmark import main, parse_args, precisions, row_name, summarise_rounds

__all__ = ['main', 'parse_args', 'precisions', 'row_name', 'summarise_rounds']  # what tests load from this file

if __name__ == '__main__':
    main()
