"""The multi-task runtime's memory settings: sessions without ORT's CPU arena, the free heap given back to the
OS, and measure.py reporting both (a tiny graph: this checks the tool, not the numbers)."""
import sys

import pytest
import torch
from torch import nn

from petah_mm.deploy.onnx import measure
from petah_mm.deploy.onnx.export import onnx_bytes
from petah_mm.deploy.onnx.runtime import cpu_session, release_free_memory
from petah_mm.utils import write_bytes_atomic


@pytest.fixture(scope='module')
def tiny_graph(tmp_path_factory):
    path = tmp_path_factory.mktemp('memory') / 'tiny.onnx'
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    write_bytes_atomic(path, onnx_bytes(model, torch.zeros(1, 3, 16, 16), ['out'], dynamic_batch=True))
    return path


def test_a_session_without_arena(tiny_graph):
    assert cpu_session(tiny_graph).get_session_options().enable_cpu_mem_arena
    assert not cpu_session(tiny_graph, arena=False).get_session_options().enable_cpu_mem_arena


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='malloc_trim and /proc/self/status are Linux')
def test_measure_reports_the_trimmed_memory(tiny_graph):
    assert release_free_memory()
    result = measure.measure('merged', [str(tiny_graph)], tasks=1, repeats=2, threads=1, arena=False, trim=True)
    assert result['arena'] is False and len(result['latency_ms']) == 1
    for key in ('sessions_mb', 'trimmed_mb', 'trimmed_after_timing_mb', 'peak_added_mb'):
        assert key in result, sorted(result)
    assert result['trimmed_mb'] <= result['sessions_mb'] + 1, result
