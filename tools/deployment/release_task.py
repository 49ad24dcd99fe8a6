"""Release a trained real task: its package (adapter and heads; the backbone is the installed ImageNet weights),
named with its sha256, and its measured metrics; or the shared backbone file of the installed weights.

    python tools/deployment/release_task.py CONFIG CHECKPOINT [--out-root release] [--data-root DIR]
    python tools/deployment/release_task.py --backbone-only CONFIG OUT.safetensors

The logic lives in :mod:`petah_mm.tools.deployment.release_task`, where the tests import it.
"""
from petah_mm.tools.deployment.release_task import main

if __name__ == '__main__':
    main()
