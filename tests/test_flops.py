"""FLOPs counters see what an adapted backbone computes: merged = the plain model, unmerged slightly
more, with gradients enabled (as the libraries' get_flops.py run), in train and eval mode."""
import torch
from mmengine.analysis import get_model_complexity_info


def flops(model, size=64):
    return get_model_complexity_info(model, input_shape=(3, size, size), show_table=False,
                                     show_arch=False)['flops']


def test_petah_counts_the_plain_flops_merged_and_slightly_more_unmerged(build_ef):
    assert torch.is_grad_enabled()
    plain = flops(build_ef('frozen').train())
    petah = build_ef().train()
    unmerged = flops(petah)
    assert plain < unmerged < 1.05 * plain
    assert flops(petah.eval()) == unmerged  # eval counts the same plain ops
    petah.merge_adapters()
    assert flops(petah) == plain
