"""Count what one task adds to the shared backbone: the paper's "#Params" (heads excluded).

    python tools/analysis_tools/count_params.py CONFIG [--cfg-options ...]
    python tools/analysis_tools/count_params.py --paper-table    # every EF arch x preset vs the paper
    python tools/analysis_tools/count_params.py --families       # every supported family x preset

The logic lives in :mod:`petah_mm.tools.analysis.count_params`, where the tests import it.
"""
from petah_mm.tools.analysis.count_params import main

if __name__ == '__main__':
    main()
