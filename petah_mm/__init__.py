"""petah_mm: PETAH task adaptation (LoRA + convolutional LoRA) for hybrid backbones in OpenMMLab.

Importing the package registers its modules in mmengine's root registries, so mmdet, mmseg and
mmpretrain configs can build them (``custom_imports=dict(imports=['petah_mm'])``), and
allow-lists the types that mmengine checkpoints need under ``torch.load(weights_only=True)``, and
makes every mmengine checkpoint load go through that (:mod:`petah_mm.engine.checkpoint`).
"""
from .compat import allow_mmengine_checkpoints

allow_mmengine_checkpoints()

from . import datasets, engine, models, sparse  # noqa: E402,F401  (registers datasets, models, hooks, optimizers)
from .adapters import METHODS, build_plan  # noqa: E402

engine.register_checkpoint_loaders()

__version__ = '0.1.0'
__all__ = ['METHODS', 'build_plan', '__version__']
