import pytest

from petah_mm.adapters import FAMILIES, PRESETS, build_plan, preset


@pytest.mark.parametrize('name', PRESETS)
def test_every_preset_builds_a_plan(name):
    plan = build_plan(**preset(name))
    assert plan.method == PRESETS[name]['method']


def test_preset_ranks_match_the_paper():
    assert build_plan(**preset('petah2')).adapters['conv']['rank'] == 2
    assert build_plan(**preset('petah1')).adapters['conv']['rank'] == 1
    assert build_plan(**preset('lora-attn-r16')).adapters['attn']['rank'] == 16
    assert set(build_plan(**preset('lora-attn-mlp-r8')).adapters) == {'attn', 'mlp'}


def test_preset_returns_a_copy_and_unknown_names_are_listed():
    preset('petah2')['conv_rank'] = 5
    assert PRESETS['petah2']['conv_rank'] == 2
    with pytest.raises(KeyError, match='petah2'):
        preset('petah3')


def test_every_preset_has_a_family_and_the_budget_preset_waits_for_its_ranks():
    assert set(FAMILIES) == set(PRESETS)
    plan = build_plan(**preset('petah-budget'))
    assert plan.needs_ranks and plan.budget == 'petah2' and plan.layer_ranks is None
    assert {group: cfg['rank'] for group, cfg in plan.adapters.items()} == dict(attn=None, conv=None)
    assert not any(build_plan(**preset(name)).needs_ranks for name in PRESETS if name != 'petah-budget')
