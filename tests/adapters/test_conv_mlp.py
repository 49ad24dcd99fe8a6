"""EfficientFormer's ConvMlp trained as one function: the layer-by-layer path's outputs and gradients, less
saved activation memory, and only where the folding is exact."""
import pytest
import torch
from mmpretrain.models.backbones.efficientformer import ConvMlp
from torch import nn

from petah_mm.adapters import adapt_layer, preset
from petah_mm.adapters.conv_mlp import LowRankConvMlp, LowRankConvMlpFunction, convert_conv_mlps
from petah_mm.models import PETAHEfficientFormer
from petah_mm.testing import randomise_adapters
from petah_mm.utils import convert_frozen_batchnorm

FUSED = 'LowRankConvMlpFunctionBackward'


def adapted_mlp(adapter=dict(type='lora', rank=2, alpha=4.), dtype=torch.float32, drop=0.):
    """A ConvMlp as an adapted backbone holds it: LoRA on both convs, frozen norms with non-trivial statistics."""
    torch.manual_seed(0)
    mlp = ConvMlp(6, 10, drop=drop).to(dtype)
    for norm in (mlp.norm1, mlp.norm2):
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2)
        nn.init.uniform_(norm.weight, 0.5, 1.5), nn.init.uniform_(norm.bias, -0.5, 0.5)
    mlp.requires_grad_(False)
    mlp.fc1, mlp.fc2 = (adapt_layer(name, getattr(mlp, name), adapter) for name in ('fc1', 'fc2'))
    randomise_adapters(mlp, std=0.3)
    wrapper = nn.Sequential(mlp)
    convert_frozen_batchnorm(wrapper)
    assert convert_conv_mlps(wrapper) == 1
    mlp = wrapper[0].train()
    for norm in (mlp.norm1, mlp.norm2):
        norm.eval()
    return mlp


def outputs_and_grads(mlp, x, fuse, dtype=None):
    mlp.fuse_training = fuse
    mlp.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    with torch.autocast('cpu', dtype=dtype, enabled=dtype is not None):
        out = mlp(x)
    (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
    return type(out.grad_fn).__name__, [out, x.grad] + [p.grad for p in mlp.parameters() if p.requires_grad]


def test_the_function_passes_gradcheck():
    mlp = adapted_mlp(dtype=torch.double)
    x = torch.randn(2, 6, 5, 4, dtype=torch.double, requires_grad=True)
    fc1, fc2 = mlp.fc1, mlp.fc2

    def fused(x, a1, b1, a2, b2):
        convs = [(fc.weight, fc.bias, a, b, fc.adapter.scaling, *folded) for fc, a, b, folded in
                 ((fc1, a1, b1, norm_affine(mlp.norm1)), (fc2, a2, b2, norm_affine(mlp.norm2)))]
        return LowRankConvMlpFunction.apply(x, 'none', *convs[0], *convs[1])

    factors = [p.detach().clone().requires_grad_() for p in (fc1.adapter.lora_A, fc1.adapter.lora_B,
                                                             fc2.adapter.lora_A, fc2.adapter.lora_B)]
    assert torch.autograd.gradcheck(fused, (x, *factors))


def norm_affine(norm):
    scale = norm.weight / (norm.running_var + norm.eps).sqrt()
    return scale, norm.bias - norm.running_mean * scale


@pytest.mark.parametrize('dtype, tolerance', [(None, 1e-5), (torch.bfloat16, 0.02)])
def test_fused_training_matches_the_layer_by_layer_path(dtype, tolerance):
    mlp = adapted_mlp()
    x = torch.randn(3, 6, 9, 7)
    fused_fn, fused = outputs_and_grads(mlp, x, True, dtype)
    plain_fn, plain = outputs_and_grads(mlp, x, False, dtype)
    assert fused_fn == FUSED and plain_fn != FUSED
    assert len(fused) == 6  # output, x and the four factors
    for a, b in zip(fused, plain):
        assert ((a.float() - b.float()).norm() / b.float().norm()).item() < tolerance


def saved_bytes(mlp, x, fuse) -> int:
    mlp.fuse_training = fuse
    total = []

    def pack(tensor):
        total.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        mlp(x.clone().requires_grad_())
    return sum(total)


def test_fused_training_keeps_no_gelu_output_for_backward():
    mlp = adapted_mlp()
    x = torch.randn(4, 6, 16, 16)
    inputs, hidden = x.numel() * 4, x.numel() // 6 * 10 * 4  # bytes of x and of one hidden-width activation
    fused, plain = saved_bytes(mlp, x, True), saved_bytes(mlp, x, False)
    assert plain >= inputs + 2 * hidden  # x, the GELU's input and its output
    assert fused <= inputs + hidden + 4096  # x, the GELU's input and the (small) weights and factors


def forced_form(mlp):
    mlp.fc2.adapter.use_form('branch')


def training_norm(mlp):
    mlp.norm1.train()


def merged(mlp):
    mlp.fc1.merge()
    mlp.fc1.adapter.requires_grad_(False)


def three_by_three(mlp):
    mlp.fc1 = adapt_layer('fc1', nn.Conv2d(6, 10, 3, padding=1).requires_grad_(False), dict(type='lora', rank=2))


@pytest.mark.parametrize('change', [forced_form, training_norm, merged, three_by_three], ids=lambda f: f.__name__)
def test_fusion_applies_only_where_it_is_exact(change):
    mlp = adapted_mlp()
    change(mlp)
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    assert type(mlp(x).grad_fn).__name__ != FUSED


@pytest.mark.parametrize('kwargs', [dict(adapter=dict(type='dora', rank=2)), dict(drop=0.1),
                                    dict(adapter=dict(type='lora', rank=2, dropout=0.1))],
                         ids=['dora', 'dropout', 'adapter dropout'])
def test_other_factorizations_and_dropout_train_layer_by_layer(kwargs):
    mlp = adapted_mlp(**kwargs)
    assert type(mlp(torch.randn(2, 6, 5, 5, requires_grad=True)).grad_fn).__name__ != FUSED


def test_inference_and_traces_take_plain_ops():
    mlp = adapted_mlp()
    x = torch.randn(2, 6, 5, 5, requires_grad=True)
    with torch.no_grad():
        assert mlp(x).grad_fn is None
    traced = torch.jit.trace(mlp, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert 'PythonOp' not in graph and 'aten::gelu' in graph and 'aten::batch_norm' in graph


def test_conversion_keeps_the_state_dict():
    mlp = ConvMlp(6, 10)
    before = mlp.state_dict()
    wrapper = nn.Sequential(mlp)
    convert_conv_mlps(wrapper)
    after = wrapper[0].state_dict()
    assert type(wrapper[0]) is LowRankConvMlp and after.keys() == before.keys()
    assert all(after[key].data_ptr() == before[key].data_ptr() for key in before)


def test_an_adapted_efficientformer_trains_its_mlps_fused():
    backbone = PETAHEfficientFormer(arch='l1', adapter=preset('petah2'), out_indices=[3], reshape_last_feat=False)
    mlps = [m for m in backbone.modules() if isinstance(m, ConvMlp)]
    assert mlps and all(type(m) is LowRankConvMlp for m in mlps)
    seen = []
    mlps[0].register_forward_hook(lambda module, args, out: seen.append(type(out.grad_fn).__name__))
    backbone.train()(torch.randn(1, 3, 64, 64))
    assert seen == [FUSED]
