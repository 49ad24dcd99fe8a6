"""Generate the real-material sets: animal-mnist silhouettes on scikit-image photos (docs/real_data.md).

    python tools/misc/make_real_data.py coco data/animal_silhouettes
    python tools/misc/make_real_data.py cls data/animal_cls
    python tools/misc/make_real_data.py mnist data/mnist_5k

The logic lives in :mod:`petah_mm.tools.datagen.make_real_data`, where the tests import it.
"""
from petah_mm.tools.datagen.make_real_data import main

if __name__ == '__main__':
    main()
