"""The Figure 2 plot tool reads the grid tool's results format."""
import json

import pytest

from petah_mm.tools.studies.plot_results import mean_accuracy
from helpers import REPO, run, run_script


def test_mean_accuracy_averages_datasets_per_model():
    rows = [dict(arch='l7', method='petah2', dataset=d, accuracy=a, params=450_934, flops=20.3)
            for d, a in (('cub', 80.0), ('dtd', 70.0))]
    rows.append(dict(arch='l3', method='petah2', dataset='cub', accuracy=60.0, params=239_286, flops=7.8))
    assert mean_accuracy(rows) == {('l7', 'petah2'): (75.0, 450_934, 20.3), ('l3', 'petah2'): (60.0, 239_286, 7.8)}


def test_paper_reference_plot_is_drawn(tmp_path):
    out = tmp_path / 'figure2.png'
    run('tools/analysis_tools/plot_results.py', 'docs/paper_table3.json', out)
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    paper = json.loads((REPO / 'docs/paper_table3.json').read_text())['results']
    assert mean_accuracy(paper)[('l7', 'petah2')][0] == pytest.approx(86.40, abs=0.01)  # Table 3's mean


def test_empty_results_are_refused(tmp_path):
    (tmp_path / 'r.json').write_text('{"results": []}')
    proc = run_script('tools/analysis_tools/plot_results.py', tmp_path / 'r.json', tmp_path / 'o.png')
    assert proc.returncode != 0 and 'no "results" records' in proc.stderr
