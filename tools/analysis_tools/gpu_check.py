"""Self-check of petah_mm on a CUDA machine: mmcv's CUDA ops, the adapted backbone on CUDA against the
CPU (training and inference), a 20-iteration ``--amp`` training run of the toy detector, and the
benchmark on the GPU.

    python tools/analysis_tools/gpu_check.py [--work-dir work_dirs/gpu_check] [--device cuda:0]

The logic lives in :mod:`petah_mm.tools.analysis.gpu_check`, where the tests import it.
"""
import sys

from petah_mm.tools.analysis.gpu_check import main

if __name__ == '__main__':
    sys.exit(main())
