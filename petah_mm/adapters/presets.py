"""The paper's adapter variants by their model-zoo names, defined once for configs and tools.

The names are those of the config files (``cascade-rcnn_ef-l7-petah2_fpn_1x_coco.py``) and of the
paper's tables; each value is the ``adapter=dict(...)`` argument of an adapted backbone.
"""
from typing import Dict

PRESETS: Dict[str, dict] = {
    'frozen': dict(method='frozen'),
    'full': dict(method='full'),
    'attn-ft': dict(method='attn_ft'),
    'lora-attn-r8': dict(method='lora_attn', rank=8),
    'lora-attn-r16': dict(method='lora_attn', rank=16),
    'lora-attn-mlp-r8': dict(method='lora_attn_mlp', rank=8),
    'petah1': dict(method='petah', rank=8, conv_rank=1),
    'petah2': dict(method='petah', rank=8, conv_rank=2),
}


def preset(name: str) -> dict:
    """A copy of the ``adapter`` config of preset ``name``, or a KeyError that lists them all."""
    if name not in PRESETS:
        raise KeyError(f'unknown adapter preset {name!r}; choose one of {", ".join(PRESETS)}')
    return dict(PRESETS[name])
