"""Clear errors for what a user hands the multi-task demo (issue 23, item 6): ``--task`` arguments, and
images whose size a resize step of the task's test pipeline cannot handle; and the demo refusing an attacker's
package before any of it runs (issue 31, failure 2)."""
import argparse
import json
import shutil
import sys

import cv2
import numpy as np
import pytest
from mmcv.transforms import Resize
from mmpretrain.datasets.transforms import ResizeEdge

from petah_mm.deploy import MultiTaskModel, export_shared_backbone, export_task_package
from petah_mm.deploy.pipeline import MIN_SIDE, resized_size
from petah_mm.tools.deployment.multitask_args import task_packages, task_spec
from helpers import REPO, run, run_process
from helpers.task_models import trained_model, write_packages


def test_task_argument_without_equals_names_the_argument_and_its_form(tmp_path):
    proc = run_process([sys.executable, REPO / 'tools' / 'deployment' / 'multitask_demo.py', '--backbone',
                        tmp_path / 'b.safetensors', '--task', 'pk', '--image', tmp_path / 'x.jpg'])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "argument --task: 'pk' is not NAME=PACKAGE" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize('text', ['pk', '=pk', 'seg=', ' = '])
def test_malformed_task_specs_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError, match='is not NAME=PACKAGE'):
        task_spec(text)


def test_a_task_name_given_twice_is_refused_by_name():
    assert task_packages([task_spec('seg=a'), task_spec('cls=b')]) == dict(seg='a', cls='b')
    with pytest.raises(ValueError, match=r'--task names seg more than once \(--task seg=a --task seg=c\)'):
        task_packages([task_spec('seg=a'), task_spec('cls=b'), task_spec('seg=c')])


@pytest.mark.parametrize('step', [dict(type='Resize', scale=(192, 160), keep_ratio=True),
                                  dict(type='Resize', scale=224, keep_ratio=True),
                                  dict(type='Resize', scale=(112, 96)), dict(type='Resize', scale=64),
                                  dict(type='ResizeEdge', scale=72, edge='short'),
                                  dict(type='ResizeEdge', scale=72, edge='long')])
@pytest.mark.parametrize('size', [(160, 120), (120, 160), (37, 1000), (1000, 999)])
def test_predicted_resize_equals_what_the_transform_does(step, size):
    """The size check computes each step's output with the library's rule: compare with the transform itself."""
    transform = (ResizeEdge if step['type'] == 'ResizeEdge' else Resize)(**{k: v for k, v in step.items()
                                                                            if k != 'type'})
    out = transform(dict(img=np.zeros((*size, 3), np.uint8)))['img']
    assert resized_size(step, size) == out.shape[:2]


@pytest.fixture(scope='module')
def seg_packages(toy_backbone, tmp_path_factory):
    return write_packages(dict(seg=('seg', 0)), toy_backbone, tmp_path_factory.mktemp('input_packages'))


@pytest.fixture(scope='module')
def seg_server(seg_packages):
    packages, backbone = seg_packages
    return MultiTaskModel(backbone, packages, mode='routing')


@pytest.mark.slow
def test_the_demo_refuses_a_package_whose_pipeline_step_evals(seg_packages, tmp_path):
    """Failure 2 ran its payload end to end through the demo: a torchvision step whose dtype mmpretrain evals."""
    packages, backbone = seg_packages
    marker = tmp_path / 'pwned'
    attack = shutil.copytree(packages['seg'], tmp_path / 'attack')
    data = json.loads((attack / 'config.json').read_text())
    data['config']['test_dataloader']['dataset']['pipeline'].insert(1, {
        '_scope_': 'mmpretrain', 'type': 'torchvision/ConvertImageDtype',
        'dtype': f"float32 if __import__('pathlib').Path({str(marker)!r}).touch() else torch.float32"})
    (attack / 'config.json').write_text(json.dumps(data))
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), np.full((160, 192, 3), 127, np.uint8))
    proc = run_process([sys.executable, REPO / 'tools' / 'deployment' / 'multitask_demo.py', '--backbone', backbone,
                        '--task', f'seg={attack}', '--image', image, '--out-dir', tmp_path / 'out'])
    assert proc.returncode != 0 and not marker.exists(), proc.stderr[-2000:]
    assert (f"{attack / 'config.json'}: config.test_dataloader.dataset.pipeline[1]._scope_='mmpretrain' must be the "
            "package's default_scope 'mmseg'") in proc.stderr, proc.stderr[-2000:]


def test_the_demo_in_routing_mode_measures_the_forms_before_it_times(toy_backbone, seg_packages, tmp_path):
    """Each task's forms are measured before its timed inference; a package without class names is served but not
    drawn, and the demo says why."""
    cfg, model = trained_model('seg', toy_backbone)
    count = cfg.model.decode_head.num_classes  # the drawing names and colours each class
    meta = dict(classes=tuple(f'class {i}' for i in range(count)), palette=[(40 * i % 256, 0, 0) for i in range(count)])
    export_task_package(model, cfg, tmp_path / 'seg', meta)
    export_shared_backbone(model, tmp_path / 'backbone.safetensors')
    image = tmp_path / 'image.png'
    cv2.imwrite(str(image), np.full((160, 192, 3), 127, np.uint8))
    demo = REPO / 'tools' / 'deployment' / 'multitask_demo.py'
    printed = run(demo, '--backbone', tmp_path / 'backbone.safetensors', '--task', f'seg={tmp_path / "seg"}',
                  '--task', f'bare={seg_packages[0]["seg"]}', '--image', image, '--mode', 'routing', '--out-dir',
                  tmp_path / 'out')
    lines = printed.splitlines()
    for task in ('seg', 'bare'):
        forms = next(i for i, line in enumerate(lines) if line.startswith(f'{task}: unmerged LoRA measured forms: '))
        assert lines[forms + 1].startswith(f'{task}: switch ') and '(routing)' in lines[forms + 1], printed
    assert (tmp_path / 'out' / 'seg.png').is_file() and not (tmp_path / 'out' / 'bare.png').exists()
    assert "not drawn: the package names no classes (export_task.py takes them from the checkpoint's" in printed


@pytest.mark.parametrize('width, height', [(10000, 10), (10, 10000), (1000, 20)])
def test_an_image_a_resize_step_would_shrink_is_refused_naming_the_step(seg_server, tmp_path, width, height):
    """10000x10 into Resize(scale=(192, 160), keep_ratio=True) would be 192x0, which OpenCV refuses with
    ``inv_scale_x > 0``; 1000x20 would be 192x4, under the backbone's stride."""
    image = tmp_path / f'{width}x{height}.png'
    cv2.imwrite(str(image), np.full((height, width, 3), 127, np.uint8))
    with pytest.raises(ValueError, match=rf"{image}: the test pipeline step Resize\(scale=\(192, 160\), "
                       rf"keep_ratio=True\) would resize this {width}x{height} .* under {MIN_SIDE} pixels"):
        seg_server.predict('seg', image)
    ordinary = tmp_path / 'ordinary.png'
    cv2.imwrite(str(ordinary), np.full((160, 192, 3), 127, np.uint8))  # the toy images' size
    assert seg_server.predict('seg', ordinary).seg_logits.data.isfinite().all()
