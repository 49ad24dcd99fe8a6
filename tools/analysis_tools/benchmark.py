"""Measure what PETAH costs: inference latency, training step time, peak memory, sizes and FLOPs.

    python tools/analysis_tools/benchmark.py --arch l7 --size 224 --batch 8 --out-dir work_dirs/benchmark
    python tools/analysis_tools/benchmark.py --amp --inference-batches 1 8  # + bf16 rows (fp16 on CUDA), batches 1, 8
    python tools/analysis_tools/benchmark.py --config CONFIG          # that config's model.backbone
    python tools/analysis_tools/benchmark.py --device cuda --amp
    python tools/analysis_tools/benchmark.py --methods full petah2 petah2-dora petah2-lokr  # other presets' rows

What each row measures, and how, is documented in :mod:`petah_mm.tools.analysis.benchmark`, which holds one
module per job (inference, training, sizes, switch, ablations, report) and where the tests import it.
"""
from petah_mm.tools.analysis.benchmark import main

if __name__ == '__main__':
    main()
