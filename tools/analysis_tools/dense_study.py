"""Train and evaluate the real dense tasks (Cascade Mask R-CNN + FPN, Semantic FPN) with a frozen, a PETAH-2 and
a fully fine-tuned pretrained EfficientNet-Lite0.

    python tools/analysis_tools/dense_study.py --quick
    python tools/analysis_tools/dense_study.py [--work-dir DIR]

The logic lives in :mod:`petah_mm.tools.studies.dense_study`, where the tests import it.
"""
from petah_mm.tools.studies.dense_study import main

if __name__ == '__main__':
    main()
