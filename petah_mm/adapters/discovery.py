"""Find the target groups of any backbone from its module tree, so a new family needs no code.

* ``attn``: ``nn.Linear`` or 1×1 ``nn.Conv2d`` projections of attention modules (a module whose
  class name says attention: ``Attention``, ``Attn``, ``MSA``), reached through a child called
  ``q``, ``k``, ``v``, ``qkv``, ``proj``, ... (``attn.qkv``, ``w_msa.proj``, ``q.conv``, ``proj.1.conv``);
* ``mlp``: ``nn.Linear`` layers of MLP / FFN modules (class name ``Mlp``, ``FFN``, ``FeedForward``);
* ``conv``: every other ``nn.Conv2d``: stems, downsamples, depthwise and 1×1 convolutions of
  convolutional MLPs, as PETAH adapts every convolution of a hybrid. Depthwise 1×1 convolutions
  (FastViT's ``conv_scale``) are per-channel scales, whose kernel as a matrix has one column: no
  low-rank delta exists for them, so they are skipped and counted.

Plain ``nn.Linear`` / ``nn.Conv2d``, mmcv's wrappers of them and the TF "same" padding convolutions
(timm's ``Conv2dSame`` of every ``tf_*`` model, mmcv's ``Conv2dAdaptivePadding``) are adapted: petah_mm
knows their forward. Any other subclass (the ``out_proj`` of ``nn.MultiheadAttention``, a custom
convolution) is reported as skipped, never adapted by surprise.
"""
import re
from collections import Counter
from typing import Dict, List, Tuple

from torch import nn

from .injector import Targets
from .layers import adapted_class

ATTENTION_CLASS = re.compile(r'attention|attn|msa', re.IGNORECASE)
MLP_CLASS = re.compile(r'mlp|ffn|feedforward', re.IGNORECASE)
PROJECTIONS = {'q', 'k', 'v', 'qk', 'kv', 'qkv', 'proj', 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'out_proj'}


def _is_pointwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or module.kernel_size == (1, 1)


def _under(name: str, owners: List[str]) -> List[str]:
    """``name``'s path below each owner it lies in (``'blocks.0.attn.qkv'`` under ``'blocks.0.attn'`` → ``'qkv'``)."""
    return [name[len(owner) + 1:] for owner in owners if name.startswith(owner + '.')]


def discover_groups(model: nn.Module) -> Tuple[Dict[str, List[str]], Counter]:
    """Group -> module names (in module order), and a count of the layers no group takes, by reason."""
    modules = dict(model.named_modules())
    attention = [n for n, m in modules.items() if n and ATTENTION_CLASS.search(type(m).__name__)]
    mlps = [n for n, m in modules.items() if n and MLP_CLASS.search(type(m).__name__)]
    groups: Dict[str, List[str]] = dict(attn=[], mlp=[], conv=[])
    skipped = Counter()
    for name, module in modules.items():
        if adapted_class(module) is None:
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                skipped[f'{type(module).__name__} (a subclass whose forward petah_mm does not know)'] += 1
            continue
        if _is_pointwise(module) and any(p.split('.')[0] in PROJECTIONS for p in _under(name, attention)):
            groups['attn'].append(name)
        elif isinstance(module, nn.Conv2d) and module.weight[0].numel() == 1:
            skipped['per-channel scale (depthwise 1x1 Conv2d)'] += 1
        elif isinstance(module, nn.Conv2d):
            groups['conv'].append(name)
        elif _under(name, mlps):
            groups['mlp'].append(name)
        else:
            skipped['Linear outside attention and MLP'] += 1
    return {group: names for group, names in groups.items() if names}, skipped


def fused_attention(model: nn.Module) -> List[str]:
    """Names of ``nn.MultiheadAttention`` modules: their q/k/v live in one fused ``in_proj_weight``."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]


def as_targets(groups: Dict[str, List[str]]) -> Targets:
    """Discovered names as the exact-match patterns the injector takes."""
    return {group: [re.escape(name) for name in names] for group, names in groups.items()}


def describe_groups(groups: Dict[str, List[str]], skipped: Counter) -> str:
    parts = [f'{group} {len(names)} layers' for group, names in groups.items()]
    parts += [f'{count} {reason} left as they are' for reason, count in skipped.items()]
    return ', '.join(parts) or 'no Linear or Conv2d layer'
