"""Generate a deterministic toy dataset for the end-to-end tests and the README demo.

    python tools/misc/make_toy_data.py coco data/toy_coco
    python tools/misc/make_toy_data.py ade20k data/toy_ade20k --num-train 64 --size 256 256
    python tools/misc/make_toy_data.py cls data/toy_cls --num-classes 6

The logic lives in :mod:`petah_mm.tools.datagen.make_toy_data`, where the tests import it.
"""
from petah_mm.tools.datagen.make_toy_data import main

if __name__ == '__main__':
    main()
