"""Classification and segmentation to ONNX: merged graphs are the plain model's graphs, run in ONNX Runtime
as PyTorch does, with a dynamic batch; ``--verify`` and int8 from the command line."""
import contextlib
import io

import numpy as np
import pytest
import torch

from petah_mm.deploy import build_trained_model, export_merged
from petah_mm.deploy.onnx import ExportedGraph, export_onnx, verify_export
from petah_mm.deploy.onnx.export import batch_axis_works, onnx_bytes
from petah_mm.deploy.onnx.inputs import pipeline_batches
from petah_mm.deploy.onnx.plain import op_histogram
from petah_mm.deploy.onnx.runtime import cpu_session
from petah_mm.deploy.onnx.verify import relative_difference
from petah_mm.testing import randomise_adapters
from petah_mm.tools.deployment import export_onnx as export_tool
from helpers.onnx_models import random_task_checkpoint


@pytest.fixture(scope='module')
def task_checkpoints(toy_config, tmp_path_factory):
    root = tmp_path_factory.mktemp('onnx_tasks')
    return {task: random_task_checkpoint(toy_config, task, root) for task in ('cls', 'seg')}


@pytest.fixture(scope='module')
def cls_cli_run(task_checkpoints, tmp_path_factory):
    """``export_onnx.py`` on the toy classifier with int8 and --verify, run once: (graph path, what it printed)."""
    config, checkpoint = task_checkpoints['cls']
    out, printed = tmp_path_factory.mktemp('onnx_cli') / 'cls.onnx', io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = export_tool.main([str(config), str(checkpoint), str(out), '--int8', '--calib-images', '4', '--verify',
                                 '--verify-images', '2'])
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()


@pytest.mark.parametrize('task', ['cls', 'seg'])
def test_merged_graph_is_the_plain_backbones_graph(task, task_checkpoints, cls_cli_run, tmp_path):
    """The PETAH export and the export of the plain model its merged checkpoint loads into have the same ops,
    and give the same outputs in ORT."""
    cfg, model, _ = build_trained_model(*task_checkpoints[task])
    if task == 'cls':
        petah = ExportedGraph(cls_cli_run[0], 'classification', (64, 64), 'input', ('logits', ))
    else:
        petah = export_onnx(model, cfg, tmp_path / 'petah.onnx')
    export_merged(model, cfg, tmp_path / 'merged.pth')
    plain_cfg, plain, _ = build_trained_model(tmp_path / 'merged.py', tmp_path / 'merged.pth')
    assert 'PETAH' not in type(plain.backbone).__name__
    reference = export_onnx(plain, plain_cfg, tmp_path / 'plain.onnx', shape=petah.shape)
    assert op_histogram(petah.path) == op_histogram(reference.path), (
        f'ops only in the PETAH graph: {op_histogram(petah.path) - op_histogram(reference.path)}; only in the '
        f'plain graph: {op_histogram(reference.path) - op_histogram(petah.path)}')
    assert not model.backbone.is_merged, 'the export left the adapters merged'
    x = torch.randn(1, 3, *petah.shape, generator=torch.Generator().manual_seed(0)).numpy()
    ours, theirs = (cpu_session(g.path).run(None, {'input': x})[0] for g in (petah, reference))
    assert relative_difference(ours, theirs) <= 1e-5, relative_difference(ours, theirs)


def test_batch_is_dynamic(task_checkpoints, cls_cli_run):
    cfg, model, _ = build_trained_model(*task_checkpoints['cls'])
    batch = torch.cat([d['inputs'] for d in pipeline_batches(cfg, model, 'test', 3, (64, 64))]).numpy()
    session = cpu_session(cls_cli_run[0])
    together = session.run(None, {'input': batch})[0]
    alone = np.concatenate([session.run(None, {'input': batch[i:i + 1]})[0] for i in range(3)])
    assert together.shape == (3, 4)
    assert relative_difference(together, alone) <= 1e-5, relative_difference(together, alone)


def test_verify_fails_for_a_graph_of_other_weights(task_checkpoints, cls_cli_run):
    """--verify can fail: the graph of one adapter against a model holding another."""
    cfg, model, _ = build_trained_model(*task_checkpoints['cls'])
    graph = ExportedGraph(cls_cli_run[0], 'classification', (64, 64), 'input', ('logits', ))
    randomise_adapters(model, seed=1, std=0.2)
    result = verify_export(model, cfg, graph, num_images=2)
    assert not result.ok and 'FAIL' in result.report(), result.report()


def test_refuses_an_input_larger_than_the_graph(task_checkpoints, tmp_path):
    cfg, model, _ = build_trained_model(*task_checkpoints['seg'])
    with pytest.raises(ValueError, match='larger --shape'):
        next(pipeline_batches(cfg, model, 'test', 1, shape=(64, 64)))


def test_cli_exports_int8_and_verifies(task_checkpoints, cls_cli_run):
    (out, printed), (config, checkpoint) = cls_cli_run, task_checkpoints['cls']
    assert "input 'input' (N, 3, 64, 64), dynamic batch, height and width fixed; outputs 'logits'" in printed
    assert 'verification passed' in printed and printed.count('ok   image') == 2, printed
    assert 'int8: calibrated on 4 training images' in printed and 'test top-1 in ONNX Runtime: fp32' in printed
    int8 = out.with_name('cls.int8.onnx')
    assert int8.stat().st_size < out.stat().st_size / 3, (int8.stat().st_size, out.stat().st_size)
    assert {'QuantizeLinear', 'DequantizeLinear'} <= set(op_histogram(int8)), op_histogram(int8)
    with pytest.raises(FileExistsError, match='--force'):
        export_tool.main([str(config), str(checkpoint), str(out)])


class BakesItsBatch(torch.nn.Module):
    """Takes its batch size as a Python int, as mmdet's Swin does: the trace records it as a constant."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), -1).mean(1, keepdim=True)


@pytest.mark.parametrize('module, dynamic', [(BakesItsBatch(), False), (torch.nn.Conv2d(3, 2, 3), True)])
def test_batch_axis_check(module, dynamic):
    data = onnx_bytes(module, torch.zeros(1, 3, 8, 8), ['y'], dynamic_batch=True)
    assert batch_axis_works(data, (8, 8)) == dynamic


def test_graph_input_is_normalised_by_the_configs_preprocessor(task_checkpoints):
    """mmpretrain configs declare data_preprocessor at the top level; the exported graph's input must be
    normalised with it (as the runner normalises), not the raw 0-255 image."""
    config, checkpoint = task_checkpoints['cls']
    cfg, model, _ = build_trained_model(config, checkpoint)
    mean = torch.tensor(cfg.data_preprocessor.mean).view(-1, 1, 1)
    assert torch.equal(model.data_preprocessor.mean, mean)
    inputs = next(pipeline_batches(cfg, model, 'test', 1))['inputs']
    assert inputs.abs().max() < 10, f'pipeline input reaches {inputs.abs().max():.1f}: not normalised'
