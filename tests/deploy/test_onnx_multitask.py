"""Several tasks on one ONNX backbone graph: each task's output equals its own merged graph's, and the
demo serves task packages from ONNX Runtime."""
import numpy as np
import pytest
import torch

from petah_mm.deploy import build_trained_model, export_shared_backbone, export_task_package
from petah_mm.deploy.onnx.demo import run_onnx_demo
from petah_mm.deploy.onnx.multitask import OnnxMultiTask, export_merged_task, export_multitask
from petah_mm.deploy.onnx.runtime import cpu_session
from petah_mm.deploy.onnx.verify import relative_difference
from helpers import TOY_DATA
from helpers.onnx_models import random_task_checkpoint


@pytest.mark.slow
def test_tasks_share_one_backbone_graph(toy_config, toy_workspace, tmp_path, capsys):
    built = {f'cls{seed}': build_trained_model(*random_task_checkpoint(toy_config, 'cls', tmp_path, seed=seed))
             for seed in (0, 1)}
    models = {task: model.eval() for task, (_, model, _) in built.items()}
    graphs = export_multitask(models, {task: cfg for task, (cfg, _, _) in built.items()}, (64, 64), tmp_path / 'mt')
    runtime = OnnxMultiTask(graphs)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))[:1].numpy()
    outputs = {}
    for task, model in models.items():
        alone = cpu_session(export_merged_task(model, built[task][0], (64, 64), tmp_path / f'{task}.onnx'))
        outputs[task] = runtime.run(task, x)
        expected = alone.run(None, {'input': x})[0]
        assert relative_difference(outputs[task], expected) <= 1e-5, relative_difference(outputs[task], expected)
    assert not np.allclose(outputs['cls0'], outputs['cls1']), 'both tasks gave the same logits: feeds not used'
    assert len(list((tmp_path / 'mt').glob('backbone*.onnx'))) == 1

    for task, (cfg, model, _) in built.items():
        export_task_package(model, cfg, tmp_path / 'packages' / task)
    export_shared_backbone(models['cls0'], tmp_path / 'backbone.safetensors')
    image = sorted((toy_workspace / TOY_DATA['cls'] / 'val').glob('*/*.jpg'))[0]
    run_onnx_demo(tmp_path / 'backbone.safetensors', {t: tmp_path / 'packages' / t for t in built}, image,
                  tmp_path / 'demo')
    printed = capsys.readouterr().out
    assert 'held once), input 64x64' in printed, printed
    differences = [float(line.rsplit(' ', 1)[1]) for line in printed.splitlines() if 'relative difference' in line]
    assert len(differences) == 2 and max(differences) <= 1e-5, printed
