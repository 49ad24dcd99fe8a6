"""Allocate per-layer adapter ranks for a parameter budget from the loss gradient (the ``petah-budget`` preset).

    python tools/analysis_tools/allocate_ranks.py CONFIG [--budget N] [--images 256] [--seed 0] [--out NEW.py]

The logic lives in :mod:`petah_mm.tools.studies.allocate_ranks`, where the tests and the transfer study import it.
"""
from petah_mm.tools.studies.allocate_ranks import main

if __name__ == '__main__':
    main()
