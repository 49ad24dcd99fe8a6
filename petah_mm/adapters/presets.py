"""The paper's adapter variants by their model-zoo names, defined once for configs and tools.

The names are those of the config files (``cascade-rcnn_ef-l7-petah2_fpn_1x_coco.py``) and of the
paper's tables, plus PETAH-2 with the other factorizations (``petah2-dora``, ``petah2-lokr``) and with
per-layer ranks for PETAH-2's parameter count (``petah-budget``); each value is the ``adapter=dict(...)``
argument of an adapted backbone. Tools and results files use these names; ``FAMILIES`` groups them as the
paper's Figure 2 does.

``petah-budget`` holds the method and its budget only: its ranks are measured on a backbone and its data by
``tools/analysis_tools/allocate_ranks.py`` (:mod:`petah_mm.adapters.rank_budget`), which writes a config with
``layer_ranks``; a backbone built from the bare preset says so instead of guessing ranks.
"""
from typing import Dict, Optional

from .methods import build_plan

PRESETS: Dict[str, dict] = {
    'frozen': dict(method='frozen'),
    'full': dict(method='full'),
    'attn-ft': dict(method='attn_ft'),
    'lora-attn-r8': dict(method='lora_attn', rank=8),
    'lora-attn-r16': dict(method='lora_attn', rank=16),
    'lora-attn-mlp-r8': dict(method='lora_attn_mlp', rank=8),
    'petah1': dict(method='petah', rank=8, conv_rank=1),
    'petah2': dict(method='petah', rank=8, conv_rank=2),
    # PETAH-2's targets and ranks with another factorization (not in the paper)
    'petah2-dora': dict(method='petah', rank=8, conv_rank=2, factorization='dora'),
    'petah2-lokr': dict(method='petah', rank=8, conv_rank=2, factorization='lokr'),
    # PETAH's targets, each layer's rank by the loss gradient, for PETAH-2's trainable parameter count (not in the
    # paper; docs/petah_budget.md)
    'petah-budget': dict(method='petah', budget='petah2'),
}
#: preset -> the method family it belongs to in the paper's figures
FAMILIES: Dict[str, str] = {
    'frozen': 'Linear probing', 'full': 'Full FT', 'attn-ft': 'ATTN FT', 'lora-attn-r8': 'LoRA ATTN',
    'lora-attn-r16': 'LoRA ATTN', 'lora-attn-mlp-r8': 'LoRA ATTN+MLP', 'petah1': 'PETAH', 'petah2': 'PETAH',
    'petah2-dora': 'PETAH (DoRA)', 'petah2-lokr': 'PETAH (LoKr)', 'petah-budget': 'PETAH (budget ranks)',
}


def preset(name: str) -> dict:
    """A copy of the ``adapter`` config of preset ``name``, or a KeyError that lists them all."""
    if name not in PRESETS:
        raise KeyError(f'unknown adapter preset {name!r}; choose one of {", ".join(PRESETS)}')
    return dict(PRESETS[name])


def preset_name(adapter: dict) -> Optional[str]:
    """The preset an ``adapter`` config amounts to (unused ranks ignored), or None for any other (allocated per-layer
    ranks among them: they are one backbone's and data's, not the preset's)."""
    plan = build_plan(**adapter)
    return next((name for name, cfg in PRESETS.items() if build_plan(**cfg) == plan), None)
