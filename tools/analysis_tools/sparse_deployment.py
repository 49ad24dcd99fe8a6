"""Storage and CPU latency of the two deployments of a Sparse-PETAH backbone (PETAH Sec. 5.1).

    python tools/analysis_tools/sparse_deployment.py                         # EF-L7, 90%, PETAH-2
    python tools/analysis_tools/sparse_deployment.py --arch l1 --repeats 2   # smoke test

The logic lives in :mod:`petah_mm.tools.analysis.sparse_deployment`, where the tests import it.
"""
from petah_mm.tools.analysis.sparse_deployment import main

if __name__ == '__main__':
    main()
