from .backbone import AdaptedBackboneMixin
from .factorizations import FACTORIZATIONS, Factorization, LoHa, LoRA
from .injector import adapted_layers, inject_adapters, resolve_targets, set_trainable, task_parameter_names
from .io import AdapterFileError
from .layers import AdaptedConv2d, AdaptedLayerMixin, AdaptedLinear, adapt_layer
from .methods import METHODS, AdapterPlan, build_plan
from .presets import FAMILIES, PRESETS, preset, preset_name

__all__ = [
    'AdaptedBackboneMixin', 'FACTORIZATIONS', 'Factorization', 'LoHa', 'LoRA', 'adapted_layers',
    'inject_adapters', 'resolve_targets', 'set_trainable', 'task_parameter_names', 'AdapterFileError',
    'AdaptedConv2d', 'AdaptedLayerMixin', 'AdaptedLinear', 'adapt_layer', 'METHODS', 'AdapterPlan',
    'build_plan', 'FAMILIES', 'PRESETS', 'preset', 'preset_name'
]
