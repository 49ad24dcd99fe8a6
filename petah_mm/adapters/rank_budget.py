"""Per-layer ranks that spend a parameter budget where the loss gradient says a rank pays (``petah-budget``).

Importance: LoRA-GA's first-order argument (Wang, Yu and Li 2024, "LoRA-GA: Low-Rank Adaptation with Gradient
Approximation", arXiv:2407.05000). With G = ∂L/∂W at the frozen weights, the best rank-r step of gradient descent
is G's truncated SVD, ΔW = -η·P_r(G), and it lowers the loss to first order by η·‖P_r(G)‖² = η·Σ_{i<=r} s_i²: the
r-th rank of a layer is worth s_r², the square of the r-th singular value of G reshaped to (out, in/groups·kh·kw),
the matrix every factorization here factors. G is summed over a few hundred training images before training.

Budget: global across layers, as in AdaLoRA (Zhang et al., ICLR 2023, "AdaLoRA: Adaptive Budget Allocation for
Parameter-Efficient Fine-Tuning", arXiv:2303.10512), but spent once before training from that measurement instead of
pruned during it: the ranks go into the config and the adapter file, so a run and a package reproduce them.

Allocation: every adapted layer starts at rank 1, then the next rank goes to the layer with the largest s_{r+1}² per
parameter that rank costs, until no layer's next rank fits the budget: the greedy of a knapsack whose values per
layer decrease. Rank 1 everywhere, never 0, keeps the layers adapted the same as PETAH's (a comparison at equal
parameters is then one of ranks alone), and no layer is dropped on one gradient taken through an untrained head.
"""
import hashlib
import heapq
import json
import math
from dataclasses import dataclass
from typing import Dict, List, Sequence

import torch

from .factorizations import factorization_class

#: the allocation spends at least this share of the budget, and never more than all of it
BUDGET_TOLERANCE = 0.01


@dataclass(frozen=True)
class LayerCost:
    """Trainable parameters of one layer's adapter at rank r: ``base + r * per_rank``, for r in 1 .. max_rank."""
    base: int
    per_rank: int
    max_rank: int

    def at(self, rank: int) -> int:
        return self.base + rank * self.per_rank


def layer_cost(adapter_cfg: dict, weight_shape: Sequence[int]) -> LayerCost:
    """The cost of a layer's ranks, measured by the factorization itself: built on the meta device (no memory) at
    ranks 1, 2 and the layer's largest, min(out, in/groups·kh·kw). A factorization whose count does not grow
    affinely with the rank (LoKr switches between full and low-rank factors) has no price per rank: refused."""
    shape = tuple(weight_shape)
    max_rank = min(shape[0], math.prod(shape[1:]))
    kwargs = {key: value for key, value in adapter_cfg.items() if key not in ('type', 'rank')}
    cls = factorization_class(adapter_cfg['type'])

    def count(rank):
        with torch.device('meta'):
            return sum(p.numel() for p in cls(weight_shape=shape, rank=rank, **kwargs).parameters())

    if max_rank == 1:
        return LayerCost(0, count(1), 1)
    per_rank = count(2) - count(1)
    cost = LayerCost(count(1) - per_rank, per_rank, max_rank)
    if per_rank <= 0 or count(max_rank) != cost.at(max_rank):
        raise ValueError(f'factorization {adapter_cfg["type"]!r} on a {shape} weight: its parameter count is not '
                         f'base + rank x a positive price (ranks 1, 2, {max_rank}: {count(1)}, {count(2)}, '
                         f'{count(max_rank)}), so a budget cannot be spent by rank; use lora or dora')
    return cost


def rank_gains(grad: torch.Tensor) -> List[float]:
    """What each rank of a layer is worth: the squared singular values of its gradient as (out, in/groups·kh·kw),
    largest first. They are the eigenvalues of the Gram matrix of its shorter side, in float64: a few times faster
    than an SVD, and only the smallest values, which no allocation reaches first, lose relative precision."""
    matrix = grad.detach().reshape(grad.shape[0], -1).double()
    if matrix.shape[0] > matrix.shape[1]:
        matrix = matrix.T
    return torch.linalg.eigvalsh(matrix @ matrix.T).flip(0).clamp_min(0).tolist()


def allocate_ranks(gains: Dict[str, Sequence[float]], costs: Dict[str, LayerCost], budget: int) -> Dict[str, int]:
    """{layer: rank} spending at most ``budget`` and at least (1 - BUDGET_TOLERANCE) of it, greedily by gain per
    parameter (module docstring); ties go to the layer named first. ValueError if rank 1 everywhere costs more than
    the budget, or if the ranks that fit spend less than its floor."""
    ranks = dict.fromkeys(costs, 1)
    spent = sum(cost.at(1) for cost in costs.values())
    if spent > budget:
        raise ValueError(f'a budget of {budget:,} parameters is below rank 1 on each of the {len(costs)} adapted '
                         f'layers ({spent:,}); give a larger --budget')
    order = {name: index for index, name in enumerate(costs)}
    heap = [(-gains[name][1] / cost.per_rank, order[name], name) for name, cost in costs.items() if cost.max_rank > 1]
    heapq.heapify(heap)
    while heap:
        _, _, name = heapq.heappop(heap)
        cost = costs[name]
        if spent + cost.per_rank > budget:  # this layer's next rank no longer fits; a cheaper layer's may
            continue
        ranks[name] += 1
        spent += cost.per_rank
        if ranks[name] < cost.max_rank:
            heapq.heappush(heap, (-gains[name][ranks[name]] / cost.per_rank, order[name], name))
    if spent < (1 - BUDGET_TOLERANCE) * budget:
        raise ValueError(f'the ranks spend {spent:,} of a budget of {budget:,} parameters, less than the '
                         f'{1 - BUDGET_TOLERANCE:.0%} a comparison at equal parameters needs: no layer\'s next '
                         f'rank fits the {budget - spent:,} left (each is at its largest rank, or its next costs '
                         'more); give another --budget')
    return ranks


def ranks_digest(layer_ranks: Dict[str, int]) -> str:
    """The identity of a rank table: the first 12 hex digits of the sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(layer_ranks, sort_keys=True).encode()).hexdigest()[:12]
