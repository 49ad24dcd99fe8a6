"""Fine-tune real pretrained backbones (two ImageNet CNNs, the DINOv2 ViT-S/14) with every method of the paper that
applies, pretrained and random, on real-material sets.

    python tools/analysis_tools/transfer_study.py --quick
    python tools/analysis_tools/transfer_study.py [--full] [--no-stabiliser] [--work-dir DIR]

The logic lives in :mod:`petah_mm.tools.studies.transfer_study`, where the tests import it.
"""
from petah_mm.tools.studies.transfer_study import main

if __name__ == '__main__':
    main()
