"""Frozen BatchNorm as an affine map: same outputs, no saved input for backward."""
import torch
from torch import nn

from petah_mm.utils import FrozenBatchNorm2d, convert_frozen_batchnorm


def saved_bytes(fn, x):
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return total[0]


def random_bn(channels=8):
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return bn


def test_conversion_keeps_outputs_state_and_parameters():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), random_bn(), nn.ReLU()).eval().requires_grad_(False)
    weight, state = model[1].weight, {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 17, 19)
    expected = model(x)
    assert convert_frozen_batchnorm(model) == 1
    assert isinstance(model[1], FrozenBatchNorm2d) and model[1].weight is weight
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)


def test_frozen_affine_saves_nothing_for_backward_but_trains_normally_otherwise():
    x = torch.randn(4, 8, 32, 32, requires_grad=True)
    plain = random_bn().eval().requires_grad_(False)
    container = nn.Sequential(random_bn().eval().requires_grad_(False))
    convert_frozen_batchnorm(container)
    assert saved_bytes(plain, x) >= x.numel() * 4  # F.batch_norm keeps its input
    assert saved_bytes(container[0], x) < 1024  # the affine map keeps only its constants
    container[0].train()  # a training BatchNorm behaves as BatchNorm again
    before = container[0].running_mean.clone()
    container[0](x)
    assert not torch.equal(container[0].running_mean, before)


def test_frozen_affine_keeps_the_autocast_dtype_as_batchnorm_does():
    """A bf16 activation stays bf16: fp32 constants would promote it and double the activation memory
    of everything after the norm (the bf16 training benchmark found that)."""
    plain = random_bn().eval().requires_grad_(False)
    container = nn.Sequential(random_bn().eval().requires_grad_(False))
    container[0].load_state_dict(plain.state_dict())
    convert_frozen_batchnorm(container)
    conv = nn.Conv2d(3, 8, 1)
    x = torch.randn(2, 3, 9, 11, requires_grad=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        h = conv(x)
        expected, out = plain(h), container(h)
    assert h.dtype == expected.dtype == out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected.float(), rtol=2e-2, atol=2e-2)
