"""FLOPs counters see what an adapted backbone computes: merged = the plain model, unmerged slightly
more, with gradients enabled (as the libraries' get_flops.py run), in train and eval mode."""
import re
from pathlib import Path

import mmpretrain
import torch
from mmengine.analysis import FlopAnalyzer

from helpers import REPO, run


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


def test_mmpretrains_own_get_flops_reads_the_plain_flops_or_slightly_more(build_ef):
    """The user's route: the library's tool on a PETAH-2 config, against the plain trunk counted here."""
    tool = Path(mmpretrain.__file__).parent / '.mim' / 'tools' / 'analysis_tools' / 'get_flops.py'
    out = run(tool, REPO / 'configs/fgvc/ef-l1-petah2_8xb128-200e_dtd.py', timeout=600)
    reported = float(re.search(r'^Flops: ([\d.]+)G$', out, re.M)[1])
    assert 'PythonOp' not in out
    plain = sum(flops_by_operator(build_ef('frozen', out_indices=[3], reshape_last_feat=False).eval(), 224).values())
    assert plain / 1e9 <= reported <= 1.05 * plain / 1e9
