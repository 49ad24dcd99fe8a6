"""Fine-tune real ImageNet CNNs with every CNN method, pretrained and random, on a real-material set.

    python tools/analysis_tools/transfer_study.py --quick
    python tools/analysis_tools/transfer_study.py [--full] [--work-dir DIR]

The logic lives in :mod:`petah_mm.tools.transfer_study`, where the tests import it.
"""
from petah_mm.tools.transfer_study import main

if __name__ == '__main__':
    main()
