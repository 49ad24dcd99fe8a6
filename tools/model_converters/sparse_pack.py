"""Convert a sparse backbone checkpoint between the dense .pth and the compact values + bitmask form.

    python tools/model_converters/sparse_pack.py pack checkpoints/ef-l7-sparse90.pth ef-l7-sparse90.safetensors
    python tools/model_converters/sparse_pack.py unpack ef-l7-sparse90.safetensors checkpoints/ef-l7-sparse90.pth

The logic lives in :mod:`petah_mm.tools.deployment.sparse_pack`, where the tests import it.
"""
from petah_mm.tools.deployment.sparse_pack import main

if __name__ == '__main__':
    main()
