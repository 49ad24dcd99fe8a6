from .backbone import AdaptedBackboneMixin
from .dora import DoRA
from .factorizations import FACTORIZATIONS, Factorization, factorization_class
from .injector import adapted_layers, inject_adapters, resolve_targets, set_trainable, task_parameter_names
from .io import AdapterFileError
from .layers import (ADAPTER_KEY, AdaptedConv2d, AdaptedLayerMixin, AdaptedLinear, AdaptedSamePaddingConv2d,
                     adapt_layer, is_adapter_key)
from .loha import LoHa
from .lokr import LoKr
from .lora import LoRA
from .methods import METHODS, AdapterPlan, build_plan
from .presets import FAMILIES, PRESETS, preset, preset_name
from .rank_budget import LayerCost, allocate_ranks, layer_cost, rank_gains, ranks_digest

# importing a factorization's module registers it in FACTORIZATIONS: a new one is one more import here
__all__ = [
    'ADAPTER_KEY', 'AdaptedBackboneMixin', 'FACTORIZATIONS', 'Factorization', 'factorization_class', 'DoRA', 'LoHa',
    'LoKr', 'LoRA', 'adapted_layers', 'inject_adapters', 'is_adapter_key', 'resolve_targets', 'set_trainable',
    'task_parameter_names', 'AdapterFileError', 'AdaptedConv2d', 'AdaptedLayerMixin', 'AdaptedLinear',
    'AdaptedSamePaddingConv2d', 'adapt_layer', 'METHODS', 'AdapterPlan', 'build_plan', 'FAMILIES', 'PRESETS', 'preset',
    'preset_name', 'LayerCost', 'allocate_ranks', 'layer_cost', 'rank_gains', 'ranks_digest'
]
