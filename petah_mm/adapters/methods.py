"""Task-adaptation methods by name: what each trains and which layers get which adapter.

A method speaks in *target groups* (``attn``, ``mlp``, ``conv``); the backbone declares which
of its modules form each group, so the same method applies to any backbone that declares them.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from .factorizations import factorization_class

METHODS = ('frozen', 'full', 'attn_ft', 'lora_attn', 'lora_attn_mlp', 'petah')


@dataclass(frozen=True)
class AdapterPlan:
    """What one method does to a backbone.

    Attributes:
        method: the method name, one of ``METHODS``.
        train_all: every backbone parameter trains (full fine-tuning).
        trainable_groups: target groups whose own weights train (attention fine-tuning).
        adapters: target group -> factorization config injected into each matched layer.
        norm_eval: keep BatchNorm running statistics frozen (eval mode) during training. Every
            method keeps them, full fine-tuning included: detection and segmentation train with 2 to
            4 images per GPU, too few for batch statistics (mmdet's and the paper's practice). A
            config overrides it with an explicit ``norm_eval`` on the backbone.
    """
    method: str
    train_all: bool = False
    trainable_groups: Tuple[str, ...] = ()
    adapters: Dict[str, dict] = field(default_factory=dict)
    norm_eval: bool = True

    def needs(self) -> Tuple[str, ...]:
        """The target groups this plan adapts or trains."""
        return tuple(self.adapters) + self.trainable_groups

    def describe(self) -> str:
        def settings(cfg):
            own = factorization_class(cfg['type']).settings()
            return ''.join(f' {k}={v}' for k, v in cfg.items() if k in own)

        parts = [f'{group}: {cfg["type"]} r={cfg["rank"]}{settings(cfg)}' for group, cfg in self.adapters.items()]
        if self.train_all:
            parts.append('all backbone weights train')
        parts += [f'{group}: weights train' for group in self.trainable_groups]
        return f'{self.method} ({"; ".join(parts) or "backbone frozen"})'


def build_plan(method: str,
               rank: int = 8,
               conv_rank: Optional[int] = None,
               alpha: Optional[float] = None,
               dropout: float = 0.,
               factorization: str = 'lora',
               **settings) -> AdapterPlan:
    """Turn the ``adapter=dict(...)`` config of a backbone into an :class:`AdapterPlan`.

    ``rank`` is the rank of the linear (attention / MLP) adapters, ``conv_rank`` the rank of
    the convolutional adapters of PETAH. A method ignores the ranks it does not use, so that
    switching ``adapter.method`` alone on the command line works from any config. Any other key is
    a setting of the factorization (LoKr's ``factor``), passed to every adapter it builds; a key
    the factorization does not take is refused here, its value by the factorization's constructor.
    """
    if method not in METHODS:
        raise ValueError(f'unknown adapter method {method!r}; choose one of {", ".join(METHODS)}')
    if alpha is not None and not alpha > 0:
        raise ValueError(f'adapter.alpha must be positive (ΔW is scaled by alpha / rank, so {alpha!r} would '
                         'train nothing or flip the update); leave it None for alpha = rank')
    if not 0 <= dropout < 1:
        raise ValueError(f'adapter.dropout must lie in [0, 1), got {dropout!r}')
    try:
        own = factorization_class(factorization).settings()
    except KeyError as e:
        raise ValueError(e.args[0]) from e
    unknown = sorted(set(settings) - set(own))
    if unknown:
        raise ValueError(f'adapter.{unknown[0]} is not a setting of factorization {factorization!r} nor of the '
                         f'methods; its own settings: {", ".join(own) or "none"} (besides rank, conv_rank, alpha, '
                         'dropout)')

    def adapter(r, key):
        if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
            raise ValueError(f'adapter.{key} must be a positive integer for method {method!r}, '
                             f'got {r!r}')
        return dict(type=factorization, rank=r, alpha=alpha, dropout=dropout, **settings)

    if method == 'frozen':
        return AdapterPlan(method)
    if method == 'full':
        return AdapterPlan(method, train_all=True)
    if method == 'attn_ft':
        return AdapterPlan(method, trainable_groups=('attn', ))
    if method == 'lora_attn':
        return AdapterPlan(method, adapters=dict(attn=adapter(rank, 'rank')))
    if method == 'lora_attn_mlp':
        return AdapterPlan(method, adapters=dict(attn=adapter(rank, 'rank'), mlp=adapter(rank, 'rank')))
    if conv_rank is None:
        raise ValueError("method 'petah' needs adapter.conv_rank (1 for PETAH-1, 2 for PETAH-2)")
    return AdapterPlan(method, adapters=dict(attn=adapter(rank, 'rank'), conv=adapter(conv_rank, 'conv_rank')))
