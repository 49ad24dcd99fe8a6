"""Prune the conv and linear weights of any config's backbone by magnitude (PETAH Sec. 5.1).

    python tools/model_converters/prune_backbone.py configs/fgvc/ef-l7-petah2_8xb128-100e_food101.py \
        checkpoints/ef-l7-sparse90.pth
    python tools/model_converters/prune_backbone.py CONFIG OUT --checkpoint SRC   # SRC instead of the config's
    python tools/model_converters/prune_backbone.py CONFIG OUT --random-init      # demo: nothing to download

The logic lives in :mod:`petah_mm.tools.deployment.prune_backbone`, where the tests import it.
"""
from petah_mm.tools.deployment.prune_backbone import main

if __name__ == '__main__':
    main()
