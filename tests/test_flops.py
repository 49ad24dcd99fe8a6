"""FLOPs counters see what an adapted backbone computes: merged = the plain model, unmerged slightly
more, with gradients enabled (as the libraries' get_flops.py run), in train and eval mode."""
import torch
from mmengine.analysis import FlopAnalyzer


def flops_by_operator(model, size=64):
    return FlopAnalyzer(model, torch.randn(1, 3, size, size)).unsupported_ops_warnings(False).by_operator()


def test_petah_counts_the_plain_flops_merged_and_slightly_more_unmerged(build_ef):
    assert torch.is_grad_enabled()
    plain = flops_by_operator(build_ef('frozen').train())
    petah = build_ef().train()
    unmerged = flops_by_operator(petah)
    assert all(unmerged[op] >= count for op, count in plain.items()), (plain, unmerged)  # nothing missed
    assert sum(plain.values()) < sum(unmerged.values()) < 1.05 * sum(plain.values())
    assert flops_by_operator(petah.eval()) == unmerged  # eval counts the same plain ops
    petah.merge_adapters()
    assert flops_by_operator(petah) == plain
