"""Per-layer ranks for a parameter budget (``petah-budget``): the allocation against exhaustive search, the costs
against built layers, the gains against numpy's SVD, per-layer ranks in backbones (exact merge, clear errors), in
adapter files (recorded, checked, old files unchanged) and the allocation tool end to end on the toy task."""
import copy
import itertools
import json

import numpy as np
import pytest
import torch
from mmengine.config import Config
from safetensors import safe_open

from petah_mm.adapters import (AdapterFileError, LayerCost, adapt_layer, adapted_layers, allocate_ranks, build_plan,
                               layer_cost, preset, rank_gains, ranks_digest)
from petah_mm.models import PETAHEfficientFormer, build_backbone_from_config
from petah_mm.testing import randomise_adapters
from petah_mm.tools.analysis import count_params
from petah_mm.tools.studies import allocate_ranks as tool
from helpers import CLS_TOY, assert_close_scaled, reduction_length

# ------------------------------------------------------------------------------------------------ the allocation


def exhaustive_best(gains, costs, budget):
    """The most total gain of any rank table within the budget (every layer at rank >= 1): the reference."""
    names = list(costs)
    best = -1.
    for ranks in itertools.product(*(range(1, costs[n].max_rank + 1) for n in names)):
        if sum(costs[n].at(r) for n, r in zip(names, ranks)) <= budget:
            best = max(best, sum(sum(gains[n][:r]) for n, r in zip(names, ranks)))
    return best


def test_greedy_equals_exhaustive_search_when_ranks_cost_alike():
    """With one price per rank the greedy by gain is optimal (decreasing gains per layer): exhaustive search agrees."""
    generator = np.random.default_rng(0)
    for trial in range(20):
        costs = {f'l{i}': LayerCost(base=int(generator.integers(0, 3)), per_rank=10, max_rank=int(m))
                 for i, m in enumerate(generator.integers(1, 6, size=3))}
        gains = {n: sorted(generator.exponential(size=c.max_rank).tolist(), reverse=True) for n, c in costs.items()}
        full = sum(c.at(c.max_rank) for c in costs.values())
        budget = int(generator.integers(sum(c.at(1) for c in costs.values()), full + 1))
        budget -= (budget - sum(c.at(1) for c in costs.values())) % 10  # a budget that ranks can spend exactly
        ranks = allocate_ranks(gains, costs, budget)
        assert sum(sum(gains[n][:r]) for n, r in ranks.items()) == pytest.approx(exhaustive_best(gains, costs, budget))
        assert sum(costs[n].at(r) for n, r in ranks.items()) == budget


def test_greedy_weighs_gain_per_parameter_and_fills_with_cheaper_layers():
    costs = dict(big=LayerCost(0, 100, 4), small=LayerCost(0, 10, 20))
    # per parameter: big's 2nd rank 5/100 = 0.05, 3rd 0.04; small's 2nd 1/10 = 0.1, 3rd 0.08, 4th 0.06, 5th 0.04
    # (a tie with big's 3rd: the layer named first goes first), 6th 0.03, then less
    gains = dict(big=[9., 5., 4., 1.], small=[2., 1., .8, .6, .4, .3, .2, .1, .09, .08, .07, .06, .05, .04, .03,
                                              .02, .01, .009, .008, .007])
    assert allocate_ranks(gains, costs, 100 + 10 + 3 * 10) == dict(big=1, small=4)
    assert allocate_ranks(gains, costs, 200 + 50) == dict(big=2, small=5)
    assert allocate_ranks(gains, costs, 340) == dict(big=3, small=4)
    assert allocate_ranks(gains, costs, 350) == dict(big=3, small=5)
    # big's 3rd rank is worth more per parameter than small's 6th .. 13th, but does not fit 330 - 240: they fill it
    assert allocate_ranks(gains, costs, 330) == dict(big=2, small=13)


def test_budget_limits_are_clear_errors():
    costs = dict(a=LayerCost(0, 10, 2), b=LayerCost(5, 10, 2))
    gains = dict(a=[1., .5], b=[1., .5])
    with pytest.raises(ValueError, match='below rank 1 on each of the 2 adapted layers'):
        allocate_ranks(gains, costs, 24)
    with pytest.raises(ValueError, match='spend 45 of a budget of 46 parameters, less than the 99%'):
        allocate_ranks(gains, costs, 46)  # every rank costs 45
    assert allocate_ranks(gains, costs, 45) == dict(a=2, b=2)
    wide = dict(a=LayerCost(0, 100, 2), b=LayerCost(0, 1, 1))
    with pytest.raises(ValueError, match="no layer's next rank fits the 98 left"):
        allocate_ranks(dict(a=[1., .5], b=[1.]), wide, 199)


@pytest.mark.parametrize('factorization', ['lora', 'dora'])
@pytest.mark.parametrize('module', [torch.nn.Linear(24, 40), torch.nn.Conv2d(8, 12, 3),
                                    torch.nn.Conv2d(16, 16, 5, groups=16)], ids=['linear', 'conv', 'depthwise'])
def test_layer_cost_is_what_the_built_adapter_holds(factorization, module):
    cfg = dict(type=factorization, alpha=None, dropout=0.)
    cost = layer_cost(cfg, module.weight.shape)
    assert cost.max_rank == min(module.weight.shape[0], module.weight[0].numel())
    for rank in sorted({1, 2, 3, cost.max_rank}):
        layer = adapt_layer('x', module, dict(cfg, rank=rank))
        assert cost.at(rank) == sum(p.numel() for p in layer.adapter.parameters())


def test_a_factorization_without_a_price_per_rank_is_refused():
    with pytest.raises(ValueError, match="'lokr'.*use lora or dora"):
        layer_cost(dict(type='lokr', alpha=None, dropout=0.), (64, 32, 3, 3))


@pytest.mark.parametrize('shape', [(6, 4, 3, 3), (40, 3), (16, 1, 5, 5)], ids=['conv', 'tall linear', 'depthwise'])
def test_rank_gains_are_the_squared_singular_values_of_the_gradient_as_a_matrix(shape):
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    expected = np.linalg.svd(grad.numpy().reshape(shape[0], -1).astype(np.float64), compute_uv=False)**2
    gains = rank_gains(grad)
    assert len(gains) == min(shape[0], grad[0].numel())
    np.testing.assert_allclose(gains, expected, rtol=1e-9, atol=1e-12 * expected[0])


def test_ranks_digest_ignores_order_and_sees_any_rank():
    assert ranks_digest(dict(a=1, b=2)) == ranks_digest(dict(b=2, a=1)) != ranks_digest(dict(a=1, b=3))


# ------------------------------------------------------------------------------------------- the config and plan


def test_the_bare_preset_plans_but_does_not_build():
    plan = build_plan(**preset('petah-budget'))
    assert plan.needs_ranks and 'not allocated yet' in plan.describe()
    with pytest.raises(ValueError, match='allocate_ranks.py CONFIG --out NEW_CONFIG.py'):
        PETAHEfficientFormer(arch='l1', adapter=preset('petah-budget'))


@pytest.mark.parametrize('adapter, match', [
    (dict(layer_ranks={'a': 0}), r"layer_ranks\['a'\] must be a positive integer.*got 0"),
    (dict(layer_ranks={'a': 2.0}), r"layer_ranks\['a'\] must be a positive integer.*got 2.0"),
    (dict(layer_ranks={'a': True}), r"layer_ranks\['a'\]"),
    (dict(layer_ranks={}), 'non-empty dict'),
    (dict(layer_ranks={'a': 1}, conv_rank=2), 'conv_rank=2 beside adapter.layer_ranks.*_delete_=True'),
    (dict(budget='petah2', rank=8), 'rank=8 beside adapter.budget'),
    (dict(budget=-5), 'preset name .* or a positive integer, got -5'),
])
def test_per_layer_rank_settings_are_checked_by_key(adapter, match):
    with pytest.raises(ValueError, match=match):
        build_plan('petah', **adapter)


# ------------------------------------------------------------------------------------------- in a backbone


@pytest.fixture(scope='module')
def names():
    """EfficientFormer-L1's PETAH layers by group: 2 attention Linears and 33 convolutions (stem, depthwise, 1x1)."""
    return PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', conv_rank=2)).adapted_groups


def uneven(names, offset=0):
    """Ranks 1, 2, 3, 4, 1, ... over every layer, shifted by ``offset``."""
    return {name: 1 + (i + offset) % 4 for i, name in enumerate(n for group in names.values() for n in group)}


def build(layer_ranks, **adapter):
    return PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', layer_ranks=layer_ranks, **adapter))


@pytest.fixture(scope='module')
def trained(names):
    """A PETAH L1 with uneven per-layer ranks and training-like factors."""
    torch.manual_seed(0)
    return randomise_adapters(build(uneven(names)), seed=3, std=0.05).eval()


def test_each_layer_gets_its_rank_in_every_group(trained, names):
    ranks = uneven(names)
    layers = adapted_layers(trained)
    assert set(names) == {'attn', 'conv'} and {n: layers[n].adapter.rank for n in ranks} == ranks
    assert all(len({layers[n].adapter.rank for n in group}) > 1 for group in names.values())  # uneven in each
    # the parameter count is the sum of each layer's own: LoRA's r·(out + in/groups·k²)
    expected = sum(ranks[n] * (layers[n].weight.shape[0] + layers[n].weight[0].numel()) for n in ranks)
    assert sum(trained.trainable_by_group().values()) == expected


def test_merge_is_exact_with_per_layer_ranks(trained):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        unmerged = trained(x)
        trained.merge_adapters()
        try:
            merged = trained(x)
        finally:
            trained.unmerge_adapters()
    for a, b in zip(merged, unmerged):
        assert_close_scaled(a, b, reduction_length(trained))
    identity = copy.deepcopy(trained)
    identity.reset_adapters()
    with torch.no_grad():
        assert all((a - b).abs().max() > 1e-3 * b.abs().max() for a, b in zip(unmerged, identity(x))), \
            'the randomised adapters change nothing: the merge test would pass for any merge'


def test_rank_tables_that_do_not_fit_the_backbone_name_the_layer(names):
    ranks = uneven(names)
    first = names['conv'][0]
    with pytest.raises(ValueError, match=r"layer_ranks\['stem.0.convv'\]: no adapted layer"):
        build(dict(ranks, **{'stem.0.convv': 2}))
    with pytest.raises(ValueError, match=f'no rank for the adapted layer {first!r}'):
        build({n: r for n, r in ranks.items() if n != first})
    with pytest.raises(ValueError, match=rf"layer_ranks\['{first}'\]=99: .*adapter rank 99 exceeds"):
        build(dict(ranks, **{first: 99}))


def test_adapter_file_records_the_ranks_and_refuses_other_ranks_by_layer(trained, names, tmp_path):
    path = tmp_path / 'budget.safetensors'
    trained.save_adapter(path)
    with safe_open(str(path), 'pt') as f:
        record = json.loads(f.metadata()['adapters'])
    ranks = uneven(names)
    assert record['conv'] == dict(type='lora', rank=None, alpha=None,
                                  layer_ranks={n: ranks[n] for n in names['conv']})
    assert record['attn']['layer_ranks'] == {n: ranks[n] for n in names['attn']}

    target = build(ranks)
    target.load_state_dict({k: v for k, v in trained.state_dict().items() if k not in trained.task_param_names},
                           strict=False)
    target.load_adapter(path)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(trained(x), target.eval()(x)))

    other = dict(ranks, **{names['conv'][1]: ranks[names['conv'][1]] % 4 + 1})
    with pytest.raises(AdapterFileError, match=rf"adapters mismatch \(conv.layer_ranks\['{names['conv'][1]}'\]: "
                                               rf"{ranks[names['conv'][1]]} in the file, \d in the model\)"):
        build(other).load_adapter(path)
    with pytest.raises(AdapterFileError, match=r'conv.rank: None in the file, 2 in the model.*conv.layer_ranks'):
        PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', conv_rank=2)).load_adapter(path)


def test_uniform_ranks_keep_the_record_old_files_have(names):
    """Files written before per-layer ranks existed hold exactly this record: they load as they always did."""
    meta = PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', conv_rank=2)).adapter_metadata()['adapters']
    assert meta == {'attn': {'type': 'lora', 'rank': 8, 'alpha': 8.0},
                    'conv': {'type': 'lora', 'rank': 2, 'alpha': 2.0}}


def test_count_params_prints_each_layers_rank(trained, names):
    report = count_params.report(trained)
    layers = adapted_layers(trained)
    first = names['attn'][0]
    params = sum(p.numel() for p in layers[first].adapter.parameters())
    line = next(line for line in report.splitlines() if line.startswith(first + ' '))
    assert line.split() == [first, 'attn', str(uneven(names)[first]), f'{params:,}']
    assert sum(1 for line in report.splitlines() if line.split()[1:2] in (['attn'], ['conv'])) == len(layers)


def test_tables_leave_out_presets_measured_on_data(monkeypatch):
    monkeypatch.setattr(count_params, 'FAMILIES', {})  # the header and the note, no backbone built
    header, *_, note = count_params.families_table().splitlines()
    assert '| petah2 |' in header and 'petah-budget' not in header and 'Not counted here: petah-budget' in note
    assert 'petah2-lokr' in count_params.paper_table_rows() and 'petah-budget' not in count_params.paper_table_rows()


# ------------------------------------------------------------------------------------------- the tool, end to end


@pytest.mark.slow
def test_allocate_ranks_tool_on_the_toy_task_spends_petah2s_count(toy_config, tmp_path, capsys):
    """The gradient of the toy task's L1 (attention and convolutions) over 8 images: ranks within 1 % of PETAH-2's
    count, a config that inherits the toy one and builds exactly them, and the same ranks again from the seed."""
    config = toy_config(CLS_TOY, tmp_path / 'toy.py')
    out = tmp_path / 'toy-budget.py'
    record = tool.main([str(config), '--images', '8', '--out', str(out)])
    petah2 = sum(build_backbone_from_config(str(config)).trainable_by_group().values())
    assert record['budget'] == petah2 and record['budget_spec'] == 'petah2' and record['images'] == 8
    assert 0.99 * petah2 <= record['params'] <= petah2
    backbone = build_backbone_from_config(str(out))
    assert backbone.adapter_plan.layer_ranks == record['layer_ranks']
    assert sum(backbone.trainable_by_group().values()) == record['params']
    assert set(backbone.adapted_groups) == {'attn', 'conv'} and len(set(record['layer_ranks'].values())) > 1
    assert Config.fromfile(str(out)).model.backbone.adapter.budget == petah2
    assert 'of a budget of' in capsys.readouterr().out
    again = tool.allocate(Config.fromfile(str(config)), images=8)
    assert again['digest'] == record['digest']
    with pytest.raises(FileExistsError, match='toy-budget.py'):  # refused before any work
        tool.main([str(config), '--out', str(out)])


def test_the_tool_refuses_a_method_without_adapters():
    cfg = Config(dict(model=dict(backbone=dict(type='PETAHEfficientFormer', adapter=dict(method='full')))))
    with pytest.raises(ValueError, match="'full' injects no adapter"):
        tool.allocate(cfg)
