"""benchmark.py --runtime onnxruntime: the four ONNX Runtime backbones compute what they should, and each
batch gets its rows with consistent ratios (a tiny size: this checks the tool, not the numbers)."""
import argparse

import numpy as np

from petah_mm.deploy.onnx.runtime import cpu_session
from petah_mm.deploy.onnx.verify import relative_difference
from petah_mm.tools.analysis.benchmark import onnx_inference as tool

ARGS = argparse.Namespace(config=None, arch='l1', size=64, device='cpu', inference_batches=[1, 2], warmup=0,
                          repeats=1, rounds=1)


def test_onnx_rows(monkeypatch):
    built = tool.graphs(ARGS)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), np.float32)
    outputs = {name: cpu_session(model).run(None, {'input': x, **feeds})[-1] for name, (model, feeds) in built.items()}
    merged = outputs['ORT petah2 merged']
    assert relative_difference(outputs['ORT petah2 multi-task form'], merged) <= 1e-5
    assert relative_difference(outputs['ORT plain'], merged) > 1e-3, 'random adapters changed nothing'
    assert relative_difference(outputs['ORT petah2 merged int8'], merged) < 0.5
    monkeypatch.setattr(tool, 'graphs', lambda args: built)
    rows = tool.onnx_inference(ARGS)
    assert len(rows) == 8 and rows['ORT plain, batch 2']['ratio'] == 1.0
    for batch in (1, 2):
        row, merged_row = rows[f'ORT petah2 merged int8, batch {batch}'], rows[f'ORT petah2 merged, batch {batch}']
        assert row['ratio_to_merged'] == row['ms'] / merged_row['ms'] and row['batch'] == batch
