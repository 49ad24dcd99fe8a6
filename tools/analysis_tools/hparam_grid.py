"""Grid-search the learning rate, weight decay and LR factor of a classification config (PETAH App. A.1).

    python tools/analysis_tools/hparam_grid.py configs/fgvc/ef-l7-petah2_8xb128-200e_aircraft.py
    python tools/analysis_tools/hparam_grid.py CONFIG --lr 0.005 0.01 --weight-decay 0 2e-4 --lr-mult 1 10
    python tools/analysis_tools/hparam_grid.py CONFIG --dry-run    # write the configs, train on a cluster
    python tools/analysis_tools/hparam_grid.py CONFIG --collect    # then gather their results

The logic lives in :mod:`petah_mm.tools.studies.hparam_grid`, where the tests import it.
"""
from petah_mm.tools.studies.hparam_grid import main

if __name__ == '__main__':
    main()
