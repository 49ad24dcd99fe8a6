"""Draw the PETAH paper's Figure 2 from a results file.

    python tools/analysis_tools/plot_results.py RESULTS.json OUT.png [--title ...]
    python tools/analysis_tools/plot_results.py docs/paper_table3.json docs/figure2_paper.png \
        --title "Reference: the PETAH paper's Table 3 (not measured by petah_mm)"

The logic lives in :mod:`petah_mm.tools.studies.plot_results`, where the tests import it.
"""
from petah_mm.tools.studies.plot_results import main

if __name__ == '__main__':
    main()
