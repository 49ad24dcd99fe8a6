"""Several tasks on one ONNX backbone graph: ``multitask_demo.py --runtime onnxruntime`` serves two task
packages from one backbone graph, each as its own PyTorch model computes it."""
import pytest

from petah_mm.deploy import build_trained_model, export_shared_backbone, export_task_package
from petah_mm.deploy.onnx.demo import run_onnx_demo
from helpers import TOY_DATA
from helpers.onnx_models import random_task_checkpoint


@pytest.mark.slow
def test_tasks_share_one_backbone_graph(toy_config, toy_workspace, tmp_path, capsys):
    for seed in (0, 1):
        cfg, model, _ = build_trained_model(*random_task_checkpoint(toy_config, 'cls', tmp_path, seed=seed))
        export_task_package(model, cfg, tmp_path / 'packages' / f'cls{seed}')
    export_shared_backbone(model, tmp_path / 'backbone.safetensors')
    image = sorted((toy_workspace / TOY_DATA['cls'] / 'val').glob('*/*.jpg'))[0]
    run_onnx_demo(tmp_path / 'backbone.safetensors', {t: tmp_path / 'packages' / t for t in ('cls0', 'cls1')},
                  image, tmp_path / 'demo')
    printed = capsys.readouterr().out
    assert 'held once), input 64x64' in printed, printed
    assert sorted(p.name for p in (tmp_path / 'demo' / 'onnx').iterdir()) == [
        'backbone.onnx', 'cls0.head.onnx', 'cls1.head.onnx']
    # each task's ORT logits against its own PyTorch model: a feed of the wrong task's tensors would fail
    differences = [float(line.rsplit(' ', 1)[1]) for line in printed.splitlines() if 'relative difference' in line]
    assert len(differences) == 2 and max(differences) <= 1e-5, printed
