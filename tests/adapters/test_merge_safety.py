"""Merge mode keeps the shared weights exact and refuses what would silently break them."""
import functools

import pytest
import torch
from torch import nn

from petah_mm.adapters import adapt_layer, adapted_layers, is_adapter_key
from petah_mm.deploy.multitask import tie_shared_weights
from petah_mm.testing import randomise_adapters
from helpers import assert_close_scaled, reduction_length

#: adapters with trained-like values, so that ΔW is not the zero of the init
randomise = functools.partial(randomise_adapters, std=0.1)


@pytest.fixture
def two_tasks(build_ef):
    """Two PETAH-2 task backbones holding the very same frozen tensors, as MultiTaskModel ties them."""
    first, second = randomise(build_ef('petah'), 1).eval(), randomise(build_ef('petah'), 2).eval()
    tie_shared_weights(second, first, first.shared_state_dict())
    return first, second


class TwoLayerTask(nn.Module):
    """A linear and a grouped conv, adapted: enough to see drift, small enough for 1000 switches."""

    def __init__(self, shared: nn.ModuleDict):
        super().__init__()
        self.fc = adapt_layer('fc', shared['fc'], dict(type='lora', rank=4))
        self.conv = adapt_layer('conv', shared['conv'], dict(type='loha', rank=2))


def test_a_thousand_task_switches_leave_the_shared_weights_bit_identical():
    shared = nn.ModuleDict(dict(fc=nn.Linear(64, 64), conv=nn.Conv2d(32, 32, 3, groups=2)))
    loaded = {k: v.clone() for k, v in shared.state_dict().items()}
    tasks = [randomise(TwoLayerTask(shared), seed) for seed in (1, 2)]
    assert tasks[0].fc.weight is tasks[1].fc.weight  # one copy of the shared kernels
    layers = [list(adapted_layers(task).values()) for task in tasks]
    for switch in range(1000):
        for layer in layers[switch % 2]:
            layer.merge()
        for layer in layers[switch % 2]:
            layer.unmerge()
    assert all(torch.equal(v, loaded[k]) for k, v in shared.state_dict().items())


def test_task_switches_on_a_backbone_are_exact_and_merged_outputs_match(two_tasks):
    first, second = two_tasks
    loaded = {k: v.clone() for k, v in first.shared_state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = first(x)[0]
        for _ in range(5):
            second.merge_adapters()
            second.unmerge_adapters()
            first.merge_adapters()
            merged = first(x)[0]
            first.unmerge_adapters()
    assert all(torch.equal(v, loaded[k]) for k, v in first.shared_state_dict().items())
    assert_close_scaled(merged, expected, reduction_length(first))


def test_changing_the_adapter_while_merged_still_restores_w_exactly(build_ef):
    model = randomise(build_ef('petah'), 1)
    frozen = {k: v.clone() for k, v in model.shared_state_dict().items()}
    model.merge_adapters()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.)
    for param in optimizer.param_groups[0]['params']:
        param.grad = torch.ones_like(param)
    optimizer.step()
    model.unmerge_adapters()
    assert all(torch.equal(v, frozen[k]) for k, v in model.shared_state_dict().items())
    model.merge_adapters()
    model.reset_adapters()
    model.unmerge_adapters()
    assert all(torch.equal(v, frozen[k]) for k, v in model.shared_state_dict().items())


def test_merged_state_dict_is_refused_by_an_adapted_model(build_ef):
    source, target = randomise(build_ef('petah'), 1), build_ef('petah')
    source.merge_adapters()
    merged_state = source.state_dict()
    for strict in (True, False):
        with pytest.raises(RuntimeError, match='taken while the adapters were merged'):
            target.load_state_dict(merged_state, strict=strict)
    plain = {k: v for k, v in merged_state.items() if not is_adapter_key(k)}  # what a merged export holds
    assert not any(k.endswith('merged') for k in plain)
    source.unmerge_adapters()
    target.load_state_dict(source.state_dict())  # the unmerged state loads as before


def test_loading_into_a_merged_model_is_refused(build_ef):
    model = randomise(build_ef('petah'), 1)
    state = model.state_dict()
    model.merge_adapters()
    with pytest.raises(RuntimeError, match='into a merged .*unmerge_adapters'):
        model.load_state_dict(state)


def test_a_training_step_on_a_merged_model_raises(build_ef):
    model = randomise(build_ef('petah'), 1)
    model.merge_adapters()
    model.train()
    with pytest.raises(RuntimeError, match='training step on a merged'):
        model(torch.randn(1, 3, 64, 64))
    with torch.no_grad():  # inference, even in train mode, is fine
        model(torch.randn(1, 3, 64, 64))
    model.eval()(torch.randn(1, 3, 64, 64))


def test_merge_keeps_the_original_tensor_and_restores_it():
    layer = randomise(nn.Sequential(adapt_layer('fc', nn.Linear(8, 8), dict(type='lora', rank=2))), 0)[0]
    original = layer.weight.data_ptr()
    layer.merge()
    assert layer.weight.data_ptr() != original
    layer.unmerge()
    assert layer.weight.data_ptr() == original  # the very tensor, not W + ΔW - ΔW


def test_moving_a_merged_model_moves_the_kept_frozen_weight():
    """.to() / .cuda() / .half() while merged convert the kept W with W + ΔW, so unmerging after a
    move gives back W on the new device and dtype; and the kept W is in no state dict."""
    layer = randomise(nn.Sequential(adapt_layer('fc', nn.Linear(8, 8), dict(type='lora', rank=2))), 0)[0]
    frozen = layer.weight.detach().clone()
    layer.merge()
    assert '_frozen_weight' not in str(list(layer.state_dict()))
    layer.to(torch.float64)  # the same Module._apply path as .to('cuda')
    layer.unmerge()
    assert layer.weight.dtype == torch.float64
    assert torch.equal(layer.weight, frozen.double())
