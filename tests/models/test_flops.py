"""FLOPs counters see what an adapted backbone computes: merged = the plain model, unmerged slightly
more, with gradients enabled (as the libraries' get_flops.py run), in train and eval mode."""
import os
import re
import subprocess
import sys
from pathlib import Path

import mmpretrain
import torch
from mmengine.analysis import FlopAnalyzer

REPO = Path(__file__).resolve().parents[1]


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
    proc = subprocess.run([sys.executable, str(tool), str(REPO / 'configs/fgvc/ef-l1-petah2_8xb128-200e_dtd.py')],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    reported = float(re.search(r'^Flops: ([\d.]+)G$', proc.stdout, re.M)[1])
    assert 'PythonOp' not in proc.stdout + proc.stderr
    plain = sum(flops_by_operator(build_ef('frozen', out_indices=[3], reshape_last_feat=False).eval(), 224).values())
    assert plain / 1e9 <= reported <= 1.05 * plain / 1e9
