"""Release and deployment: published checkpoints, task packages, merged exports, multi-task serving."""
import json
import os
import pickle
import shutil
import sys
import threading
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.logging.history_buffer import HistoryBuffer

from petah_mm.adapters import AdapterFileError
from petah_mm.adapters.form_choice import measured_layers
from petah_mm.datasets import make_toy_backbone
from petah_mm.deploy import (MultiTaskModel, build_task_model, export_merged, export_shared_backbone,
                             export_task_package, load_task_package, predict, publish_checkpoint)
from petah_mm.deploy.packages import PROBE_PROPOSALS
from petah_mm.models import PETAHEfficientFormer
from helpers import CLS_TOY, TOY_DATA, assert_close_scaled, reduction_length, run_process
from helpers.task_models import TOY_CONFIGS, outputs, trained_model


@pytest.fixture(scope='module')
def workspace(toy_workspace, toy_backbone):
    """The session's toy workspace, its backbone, and a validation image of the toy COCO set."""
    image = sorted((toy_workspace / TOY_DATA['coco'] / 'val2017').glob('*.jpg'))[0]
    return toy_workspace, toy_backbone, image


def assert_same(a, b, exact=True, model=None):
    """Equal outputs, or (``exact=False``, the merged kernels against the unmerged forms of ``model``) equal up
    to the rounding of another summation order."""
    for x, y in zip(outputs(a), outputs(b), strict=True):
        if exact:
            assert torch.equal(x, y)
        else:
            assert_close_scaled(x, y, reduction_length(model))


def test_publish_strips_training_state_and_names_by_sha256(tmp_path):
    buffer = HistoryBuffer()
    buffer.update(1.0)
    ckpt = dict(meta=dict(epoch=12), state_dict=dict(w=torch.ones(3)), optimizer=dict(state={}),
                message_hub=dict(log_scalars=dict(loss=buffer)), param_schedulers=[])
    torch.save(ckpt, tmp_path / 'epoch_12.pth')
    out = publish_checkpoint(tmp_path / 'epoch_12.pth', tmp_path / 'cascade-rcnn_ef-l7-petah2.pth')
    import hashlib
    assert out.name == f'cascade-rcnn_ef-l7-petah2-{hashlib.sha256(out.read_bytes()).hexdigest()[:8]}.pth'
    published = torch.load(out, weights_only=True)
    assert set(published) == {'meta', 'state_dict'} and published['meta'] == {'epoch': 12}
    with pytest.raises(KeyError, match='no .*ema'):
        publish_checkpoint(tmp_path / 'epoch_12.pth', tmp_path / 'x.pth', save_keys=['ema'])
    with pytest.raises(FileExistsError, match='force'):
        publish_checkpoint(tmp_path / 'epoch_12.pth', tmp_path / 'cascade-rcnn_ef-l7-petah2.pth')
    assert publish_checkpoint(tmp_path / 'epoch_12.pth', tmp_path / 'cascade-rcnn_ef-l7-petah2.pth', force=True) == out


def test_l7_petah2_adapter_is_under_1_9_mb(tmp_path):
    backbone = PETAHEfficientFormer(arch='l7', adapter=dict(method='petah', conv_rank=2))
    size = backbone.save_adapter(tmp_path / 'adapter.safetensors')
    assert size <= 1.9e6, f'{size / 1e6:.2f} MB'
    assert size >= 450_934 * 4  # every fp32 adapter parameter is in it


@pytest.mark.parametrize('task', ['det', 'seg', 'cls'])
def test_task_package_roundtrip(workspace, task, tmp_path):
    root, backbone_ckpt, image = workspace
    cfg, model = trained_model(task, backbone_ckpt)
    sizes = export_task_package(model, cfg, tmp_path / task)
    assert sorted(p.name for p in (tmp_path / task).iterdir()) == ['adapter.safetensors', 'config.json',
                                                                   'task.safetensors']
    assert sizes['adapter'] == (tmp_path / task / 'adapter.safetensors').stat().st_size
    export_shared_backbone(model, tmp_path / 'backbone.safetensors')
    loaded = load_task_package(tmp_path / task, tmp_path / 'backbone.safetensors')
    if task == 'det':  # the load's probe ran the RoI heads on a few proposals and boxes only, and gave the rest back
        for head in ('rpn_head', 'roi_head'):
            kept = getattr(model, head).test_cfg.max_per_img
            assert getattr(loaded, head).test_cfg.max_per_img == kept > PROBE_PROPOSALS, head
    assert_same(predict(loaded, image), predict(model, image))
    with pytest.raises(FileExistsError):
        export_task_package(model, cfg, tmp_path / task)


def test_task_package_roundtrip_with_a_wrapped_backbone(workspace, tmp_path):
    """Packages and multi-task serving know no backbone family: a PETAHBackbone-wrapped ResNet travels too."""
    _, _, image = workspace
    cfg = Config.fromfile(CLS_TOY)
    cfg.model.backbone = dict(type='PETAHBackbone', adapter='petah2',
                              backbone=dict(type='mmpretrain.ResNet', depth=18, out_indices=(3, )))
    cfg.model.neck = dict(type='GlobalAveragePooling')
    cfg.model.head.in_channels = 512
    cfg, model = trained_model('cls', None, cfg=cfg)
    export_task_package(model, cfg, tmp_path / 'cls')
    export_shared_backbone(model, tmp_path / 'backbone.safetensors')
    loaded = load_task_package(tmp_path / 'cls', tmp_path / 'backbone.safetensors')
    assert type(loaded.backbone).__name__ == 'PETAHResNet'
    assert_same(predict(loaded, image), predict(model, image))
    served = MultiTaskModel(tmp_path / 'backbone.safetensors', dict(cls=tmp_path / 'cls'), mode='merge')
    assert_same(served.predict('cls', image), predict(model, image), exact=False, model=model)


def test_package_refuses_another_backbone(workspace, tmp_path):
    root, backbone_ckpt, _ = workspace
    cfg, model = trained_model('seg', backbone_ckpt)
    export_task_package(model, cfg, tmp_path / 'seg')
    _, other = trained_model('seg', make_toy_backbone(tmp_path / 'other.pth', seed=1))
    export_shared_backbone(other, tmp_path / 'other.safetensors')
    with pytest.raises(AdapterFileError, match='different frozen weights'):
        load_task_package(tmp_path / 'seg', tmp_path / 'other.safetensors')


def test_merged_classifier_loads_into_plain_mmpretrain_without_petah_mm(workspace, tmp_path):
    root, backbone_ckpt, image = workspace
    cfg, model = trained_model('cls', backbone_ckpt)
    for step in cfg.test_dataloader.dataset.pipeline:  # tested at 224: mmpretrain's own EfficientFormer runs it
        if step.type == 'CenterCrop':
            step.crop_size = 224
    out = export_merged(model, cfg, tmp_path / 'merged_cls.pth')
    script = f"""
import torch, sys
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope
cfg = Config.fromfile({str(out.with_suffix('.py'))!r})
assert 'petah_mm' not in sys.modules and cfg.model.backbone.type == 'mmpretrain.EfficientFormer'
with DefaultScope.overwrite_default_scope('mmpretrain'):
    model = MODELS.build(cfg.model).eval()
state = torch.load({str(out)!r}, weights_only=True)['state_dict']
model.load_state_dict(state, strict=True)
x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True)
torch.save(model(x, mode='tensor'), {str(tmp_path / 'plain.pt')!r})
assert 'petah_mm' not in sys.modules
"""
    x = torch.randn(2, 3, 224, 224)  # mmpretrain's EfficientFormer only runs at 224x224
    torch.save(x, tmp_path / 'x.pt')
    proc = run_process([sys.executable, '-c', script], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with torch.no_grad():
        expected = model(x, mode='tensor')
    assert_close_scaled(torch.load(tmp_path / 'plain.pt'), expected, reduction_length(model))


@pytest.mark.parametrize('task', ['cls', 'det'])
def test_merged_export_runs_at_the_size_it_was_tested_at(workspace, tmp_path, task):
    """The toy classifier is tested at 64x64, where mmpretrain's EfficientFormer cannot run."""
    root, backbone_ckpt, image = workspace
    cfg, model = trained_model(task, backbone_ckpt)
    out = export_merged(model, cfg, tmp_path / f'merged_{task}.pth')
    plain_cfg = Config.fromfile(out.with_suffix('.py'))
    assert plain_cfg.model.backbone.type == 'DenseEfficientFormer'
    plain = build_task_model(plain_cfg)
    plain.load_state_dict(torch.load(out, weights_only=True)['state_dict'], strict=True)
    assert_same(predict(plain, image), predict(model, image), exact=False, model=model)


@pytest.fixture(scope='module')
def task_packages(workspace, tmp_path_factory):
    """A package per toy task on the shared backbone (written once for the multi-task tests), and what each
    predicts loaded alone."""
    _, backbone_ckpt, image = workspace
    out = tmp_path_factory.mktemp('task_packages')
    packages = {}
    for seed, task in enumerate(TOY_CONFIGS):
        cfg, model = trained_model(task, backbone_ckpt, seed=seed)
        export_task_package(model, cfg, out / task)
        packages[task] = out / task
    export_shared_backbone(model, out / 'backbone.safetensors')
    alone = {task: predict(load_task_package(p, out / 'backbone.safetensors'), image) for task, p in packages.items()}
    return packages, out / 'backbone.safetensors', alone


@pytest.mark.parametrize('mode', ['routing', 'merge'])
def test_multitask_outputs_equal_each_task_alone(workspace, task_packages, mode):
    image = workspace[2]
    packages, backbone, alone = task_packages
    served = MultiTaskModel(backbone, packages, mode=mode)
    first, *others = served.models.values()
    for other in others:  # one copy of the shared weights in memory
        assert other.backbone.patch_embed[0].conv.weight is first.backbone.patch_embed[0].conv.weight
    for _ in range(2):  # switch back and forth
        for task in packages:
            assert_same(served.predict(task, image), alone[task], exact=mode == 'routing',
                        model=served.models[task])


def test_routing_serves_with_the_forms_measured_on_this_cpu(workspace, task_packages, tmp_path, monkeypatch):
    """tune_forms measures each task's unmerged forms on an image like those it serves, once per CPU (tuning again
    takes the cache); they run, and change the outputs by rounding only."""
    monkeypatch.setenv('PETAH_MM_CACHE', str(tmp_path))
    monkeypatch.delenv('PETAH_MM_UNMERGED_FORMS', raising=False)
    image = workspace[2]
    packages, backbone, alone = task_packages
    served = MultiTaskModel(backbone, packages, mode='routing')
    summaries = {task: served.tune_forms(task, image) for task in packages}
    assert all(summary['rule'] == 'measured' and summary['measured'] + summary['cached'] > 0
               for summary in summaries.values())
    for task, summary in summaries.items():
        assert served.tune_forms(task, image)['cached'] == summary['measured'] + summary['cached']
    for task in packages:
        layers = measured_layers(served.models[task].backbone).values()
        assert layers and all(layer.adapter.measured_forms for layer in layers)
        assert_same(served.predict(task, image), alone[task], exact=False, model=served.models[task])


@pytest.fixture(scope='module')
def cls_package(workspace, tmp_path_factory):
    root, backbone_ckpt, _ = workspace
    cfg, model = trained_model('cls', backbone_ckpt)
    out = tmp_path_factory.mktemp('cls_package')
    export_task_package(model, cfg, out / 'cls')
    export_shared_backbone(model, out / 'backbone.safetensors')
    return out / 'cls', out / 'backbone.safetensors'


def payloads(config: dict, marker: Path) -> dict:
    """config.json contents that would run ``touch marker`` if the package were code."""
    command = f'touch {marker}'
    as_call = json.loads(json.dumps(config))
    as_call['config']['model'] = dict(type='os.system', command=command)
    as_eval = json.loads(json.dumps(config))  # mmcv's batched_nms eval()s its nms type
    as_eval['config']['model']['head']['nms'] = dict(type=f"__import__('os').system('{command}') or 'nms'")
    return {
        'python': f"__import__('os').system('{command}')\n",
        'yaml': f"!!python/object/apply:os.system ['{command}']\n",
        'pickle': pickle.dumps(dict(x=Path.touch), protocol=0).decode('latin-1'),
        'dotted type': json.dumps(as_call),
        'eval string': json.dumps(as_eval),
    }


def test_a_task_package_is_pure_data(cls_package, tmp_path):
    package, backbone = cls_package
    marker = tmp_path / 'PWNED'
    config = json.loads((package / 'config.json').read_text())
    for name, text in payloads(config, marker).items():
        planted = tmp_path / name.replace(' ', '_')
        shutil.copytree(package, planted)
        (planted / 'config.json').write_text(text)
        with pytest.raises(AdapterFileError, match='config.json: (not valid JSON|.*package schema)'):
            load_task_package(planted, backbone)
        assert not marker.exists(), f'the {name} payload ran'
    legacy = tmp_path / 'legacy'
    shutil.copytree(package, legacy)
    (legacy / 'config.json').unlink()
    (legacy / 'config.py').write_text(f"__import__('os').system('touch {marker}')\n")
    with pytest.raises(AdapterFileError, match='older, code-executing package format'):
        load_task_package(legacy, backbone)
    assert not marker.exists()


def test_a_file_from_another_package_is_refused(workspace, cls_package, tmp_path):
    package, backbone = cls_package
    root, backbone_ckpt, _ = workspace
    cfg, model = trained_model('cls', backbone_ckpt, seed=5)
    export_task_package(model, cfg, tmp_path / 'other')
    for name in ('adapter.safetensors', 'task.safetensors'):
        mixed = tmp_path / f'mixed_{name.split(".")[0]}'
        shutil.copytree(package, mixed)
        shutil.copy(tmp_path / 'other' / name, mixed / name)
        with pytest.raises(AdapterFileError, match=f'{name}: belongs to task .* but this package is task'):
            load_task_package(mixed, backbone)


def test_package_files_get_normal_permissions(cls_package):
    package, backbone = cls_package
    umask = os.umask(0)
    os.umask(umask)
    assert package.stat().st_mode & 0o777 == 0o777 & ~umask
    for path in (*package.iterdir(), backbone):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_merged_export_never_overwrites_silently(workspace, tmp_path):
    root, backbone_ckpt, _ = workspace
    cfg, model = trained_model('cls', backbone_ckpt)
    training_cfg = tmp_path / 'train_cfg.py'
    cfg.dump(training_cfg)
    cfg = Config.fromfile(training_cfg)
    before = training_cfg.read_text()
    with pytest.raises(ValueError, match='refusing to overwrite the input file'):
        export_merged(model, cfg, tmp_path / 'train_cfg.pth', force=True)  # would write train_cfg.py
    assert training_cfg.read_text() == before and not (tmp_path / 'train_cfg.pth').exists()
    export_merged(model, cfg, tmp_path / 'merged.pth')
    with pytest.raises(FileExistsError, match='force'):
        export_merged(model, cfg, tmp_path / 'merged.pth')


def test_multitask_predict_from_several_threads(workspace, task_packages):
    image = workspace[2]
    all_packages, backbone, _ = task_packages
    packages = {task: all_packages[task] for task in ('seg', 'cls')}
    served = MultiTaskModel(backbone, packages, mode='merge')
    shared = next(iter(served.models.values())).backbone.shared_state_dict()
    loaded = {k: v.clone() for k, v in shared.items()}
    alone = {task: served.predict(task, image) for task in packages}
    errors = []

    def worker(order):
        try:
            for task in order * 3:
                assert_same(served.predict(task, image), alone[task])
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(order, )) for order in (['seg', 'cls'], ['cls', 'seg'], ['cls'])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    served.models[served.active].backbone.unmerge_adapters()
    assert all(torch.equal(v, loaded[k]) for k, v in shared.items())
