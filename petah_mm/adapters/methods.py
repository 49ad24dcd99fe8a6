"""Task-adaptation methods by name: what each trains and which layers get which adapter.

A method speaks in *target groups* (``attn``, ``mlp``, ``conv``); the backbone declares which
of its modules form each group, so the same method applies to any backbone that declares them.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

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
        layer_ranks: adapted layer name -> its rank, for every adapted layer (each group config's ``rank`` is
            then None); None: each group's one rank.
        budget: the trainable-parameter budget per-layer ranks were (or are to be) allocated for: a preset
            name (its count on the backbone) or a number (:mod:`petah_mm.adapters.rank_budget`).
    """
    method: str
    train_all: bool = False
    trainable_groups: Tuple[str, ...] = ()
    adapters: Dict[str, dict] = field(default_factory=dict)
    norm_eval: bool = True
    layer_ranks: Optional[Dict[str, int]] = None
    budget: Optional[Union[str, int]] = None

    def needs(self) -> Tuple[str, ...]:
        """The target groups this plan adapts or trains."""
        return tuple(self.adapters) + self.trainable_groups

    @property
    def needs_ranks(self) -> bool:
        """A budget whose per-layer ranks are not allocated yet: a plan that describes, but builds nothing."""
        return bool(self.adapters) and self.budget is not None and self.layer_ranks is None

    def describe(self) -> str:
        def settings(cfg):
            own = factorization_class(cfg['type']).settings()
            return ''.join(f' {k}={v}' for k, v in cfg.items() if k in own)

        parts = [f'{group}: {cfg["type"]} r={cfg["rank"] or "per layer"}{settings(cfg)}'
                 for group, cfg in self.adapters.items()]
        if self.adapters and self.layer_ranks:
            ranks = self.layer_ranks.values()
            parts.append(f'ranks {min(ranks)}-{max(ranks)} over {len(self.layer_ranks)} layers'
                         + ('' if self.budget is None else f', budget {self.budget}'))
        elif self.needs_ranks:
            parts.append(f'ranks not allocated yet for budget {self.budget!r}')
        if self.train_all:
            parts.append('all backbone weights train')
        parts += [f'{group}: weights train' for group in self.trainable_groups]
        return f'{self.method} ({"; ".join(parts) or "backbone frozen"})'


def build_plan(method: str,
               rank: Optional[int] = None,
               conv_rank: Optional[int] = None,
               alpha: Optional[float] = None,
               dropout: float = 0.,
               factorization: str = 'lora',
               layer_ranks: Optional[Dict[str, int]] = None,
               budget: Optional[Union[str, int]] = None,
               **settings) -> AdapterPlan:
    """Turn the ``adapter=dict(...)`` config of a backbone into an :class:`AdapterPlan`.

    ``rank`` (default 8) is the rank of the linear (attention / MLP) adapters, ``conv_rank`` the rank of
    the convolutional adapters of PETAH. A method ignores the ranks it does not use, so that
    switching ``adapter.method`` alone on the command line works from any config. Any other key is
    a setting of the factorization (LoKr's ``factor``), passed to every adapter it builds; a key
    the factorization does not take is refused here, its value by the factorization's constructor.

    ``layer_ranks`` ({adapted layer name: rank}) gives every adapted layer its own rank instead (the
    ``petah-budget`` preset, written by ``tools/analysis_tools/allocate_ranks.py``); ``budget`` records the
    parameter budget they were allocated for. The backbone checks the names against its adapted layers.
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

    if method == 'frozen':
        return AdapterPlan(method)
    if method == 'full':
        return AdapterPlan(method, train_all=True)
    if method == 'attn_ft':
        return AdapterPlan(method, trainable_groups=('attn', ))
    per_layer = layer_ranks is not None or budget is not None
    if per_layer:
        check_per_layer(rank, conv_rank, layer_ranks, budget)
    elif rank is None:
        rank = 8

    def adapter(r, key):  # rank None: each layer's own, from layer_ranks
        if not per_layer and (not isinstance(r, int) or isinstance(r, bool) or r <= 0):
            raise ValueError(f'adapter.{key} must be a positive integer for method {method!r}, '
                             f'got {r!r}')
        return dict(type=factorization, rank=None if per_layer else r, alpha=alpha, dropout=dropout, **settings)

    layers = None if layer_ranks is None else dict(layer_ranks)
    if method == 'lora_attn':
        groups = dict(attn=adapter(rank, 'rank'))
    elif method == 'lora_attn_mlp':
        groups = dict(attn=adapter(rank, 'rank'), mlp=adapter(rank, 'rank'))
    else:
        if conv_rank is None and not per_layer:
            raise ValueError("method 'petah' needs adapter.conv_rank (1 for PETAH-1, 2 for PETAH-2)")
        groups = dict(attn=adapter(rank, 'rank'), conv=adapter(conv_rank, 'conv_rank'))
    return AdapterPlan(method, adapters=groups, layer_ranks=layers, budget=budget)


def check_per_layer(rank, conv_rank, layer_ranks, budget) -> None:
    """Per-layer ranks replace the group ranks (never both), each a positive int; a budget is a name or a count."""
    for key, value in (('rank', rank), ('conv_rank', conv_rank)):
        if value is not None:
            beside = 'budget' if layer_ranks is None else 'layer_ranks'
            raise ValueError(f'adapter.{key}={value!r} beside adapter.{beside}: per-layer ranks replace the group '
                             f'ranks; drop adapter.{key} (in a config that inherits a uniform-rank adapter: '
                             'adapter=dict(_delete_=True, ...))')
    if budget is not None and not (isinstance(budget, str) or type(budget) is int and budget > 0):
        raise ValueError(f'adapter.budget must be a preset name (its parameter count) or a positive integer, '
                         f'got {budget!r}')
    if layer_ranks is None:
        return
    if not isinstance(layer_ranks, dict) or not layer_ranks:
        raise ValueError(f'adapter.layer_ranks must be a non-empty dict {{layer name: rank}}, got {layer_ranks!r}')
    for name, r in layer_ranks.items():
        if not isinstance(name, str) or type(r) is not int or r <= 0:
            raise ValueError(f'adapter.layer_ranks[{name!r}] must be a positive integer rank (keyed by the layer '
                             f'name), got {r!r}')
