"""``multitask_demo.py`` on the real transformer: a ViT classification task and a dense ViT segmentation task
(packages of seeded random adapters on the installed DINOv2 weights) served from one copy of the backbone file
that ``release_task.py --backbone-only`` writes; the classifier's top classes are printed with their scores; a
backbone file of other frozen weights is refused."""
import contextlib
import io
import runpy

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from petah_mm.adapters.io import AdapterFileError
from petah_mm.datasets import ANIMAL_CLASSES
from petah_mm.deploy import export_task_package
from petah_mm.deploy.packages import build_task_model
from petah_mm.testing import randomise_adapters
from petah_mm.tools.deployment.release_task import write_installed_backbone
from petah_mm.utils.tensor_file import read_tensor_file, write_tensor_file
from helpers import REPO

REAL = REPO / 'configs' / 'real'
CONFIGS = dict(cls=REAL / 'dinov2-vit-s14-petah2_animal-cls-112px.py',
               seg=REAL / 'fpn_dinov2-vit-s14-petah2_simple-fpn_animal-silhouettes.py')
CLASSES = dict(cls=tuple(ANIMAL_CLASSES), seg=('background', *ANIMAL_CLASSES))


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    """``(backbone file, {task: package}, image)``: the installed ViT weights, once, and the two packages."""
    root = tmp_path_factory.mktemp('vit_multitask')
    packages = {}
    for task, config in CONFIGS.items():
        cfg = Config.fromfile(config)
        model = build_task_model(cfg)
        model.init_weights()
        randomise_adapters(model, seed=0)
        palette = [tuple(int(c) for c in np.random.default_rng(i).integers(0, 256, 3)) for i in range(11)]
        meta = dict(classes=CLASSES[task], **(dict(palette=palette) if task == 'seg' else {}))
        export_task_package(model, cfg, root / task, meta)
        packages[task] = root / task
    backbone = root / 'vit_backbone.safetensors'
    write_installed_backbone(CONFIGS['cls'], backbone)  # release_task.py --backbone-only
    image = root / 'image.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(image)
    return backbone, packages, image


def demo(*args) -> str:
    main = runpy.run_path(str(REPO / 'tools' / 'deployment' / 'multitask_demo.py'), run_name='multitask_demo')['main']
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([str(a) for a in args])
    return printed.getvalue()


@pytest.mark.slow
def test_serves_a_vit_classifier_and_segmentor_from_one_backbone_copy(served, tmp_path):
    backbone, packages, image = served
    printed = demo('--backbone', backbone, '--task', f'cls={packages["cls"]}', '--task', f'seg={packages["seg"]}',
                   '--image', image, '--mode', 'merge', '--out-dir', tmp_path)
    lines = printed.splitlines()
    assert lines[0].startswith('shared backbone: 86.') and lines[0].endswith('MB, held once'), printed
    assert lines[1].startswith('  cls: petah (attn: lora r=8; conv: lora r=2)'), printed
    cls, seg = (lines.index(next(line for line in lines if line.startswith(f'{task}: switch'))) for task in CONFIGS)
    top = lines[cls + 1].strip()
    assert top.startswith('top-3: ') and len(top.split(', ')) == 3, printed
    names, scores = zip(*(entry.split() for entry in top[len('top-3: '):].split(', ')))
    assert set(names) <= set(ANIMAL_CLASSES), top
    scores = [float(score) for score in scores]
    assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6, top
    assert lines[seg + 1].strip().startswith('largest classes by area: '), printed
    assert (tmp_path / 'cls.png').is_file() and (tmp_path / 'seg.png').is_file()


@pytest.mark.slow
def test_refuses_a_package_for_other_frozen_weights(served, tmp_path):
    backbone, packages, image = served
    tensors, meta = read_tensor_file(backbone, kind='backbone')
    name = next(k for k in tensors if k.endswith('blocks.0.attn.qkv.weight'))
    tensors[name] = tensors[name] + 1e-3
    other = tmp_path / 'other_backbone.safetensors'
    write_tensor_file(other, tensors, dict(arch=meta['arch']), kind='backbone')
    with pytest.raises(AdapterFileError, match='different frozen weights'):
        demo('--backbone', other, '--task', f'cls={packages["cls"]}', '--image', image, '--out-dir', tmp_path)
