"""Fine-grained classification (PETAH Tables 3, 4 and 7): configs, LR factors, Food-101's val split,
the dropout head, the hyperparameter grid tool, and a toy run end to end."""
import argparse
import functools
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mmpretrain
import pytest
import torch
import yaml
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from mmpretrain.datasets.categories import FOOD101_CATEGORIES
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.registry import DATASETS
from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
from PIL import Image
from torch import nn

from petah_mm.adapters import build_plan
from petah_mm.datasets import Food101WithVal, make_toy_backbone, make_toy_classification, write_toy_user_config
from petah_mm.models import DenseEfficientFormer, DropoutLinearClsHead

REPO = Path(__file__).resolve().parents[1]
FGVC = REPO / 'configs' / 'fgvc'
TOY = REPO / 'configs' / 'toy' / 'ef-l1-petah2_toy-cls.py'
EF = Config.fromfile(REPO / 'configs' / '_base_' / 'models' / 'efficientformer.py')

# What each config name promises, written from the paper rather than read from the configs.
DATASETS_EXPECTED = {  # name: (dataset type, classes, epochs, train / val / test splits)
    'cub': ('CUB', 200, 200, ('train', 'test', 'test')),
    'cars': ('StanfordCars', 196, 200, ('train', 'test', 'test')),
    'pets': ('OxfordIIITPet', 37, 200, ('trainval', 'test', 'test')),
    'aircraft': ('FGVCAircraft', 100, 200, ('train', 'val', 'test')),
    'dtd': ('DTD', 47, 200, ('train', 'val', 'test')),
    'food101': ('Food101WithVal', 101, 100, ('train', 'val', 'test')),
}
METHODS_EXPECTED = {  # name: (adapter method, rank per adapter group, LR factor)
    'frozen': ('frozen', {}, 1.0),
    'full': ('full', {}, 0.1),
    'attn-ft': ('attn_ft', {}, 0.1),
    'lora-attn-r8': ('lora_attn', {'attn': 8}, 1.0),
    'lora-attn-r16': ('lora_attn', {'attn': 16}, 1.0),
    'lora-attn-mlp-r8': ('lora_attn_mlp', {'attn': 8, 'mlp': 8}, 1.0),
    'petah1': ('petah', {'attn': 8, 'conv': 1}, 1.0),
    'petah2': ('petah', {'attn': 8, 'conv': 2}, 1.0),
}
REGULARISED = {'ra', 'do', 'ra-do'}  # PETAH Table 4: EF-L7 full and PETAH-2 on the 5 smaller datasets
NAME = re.compile(r'ef-(?P<arch>l[137])-(?P<method>[\w-]+?)_8xb128(?:-(?P<reg>ra|do|ra-do))?'
                  r'-(?P<epochs>\d+)e_(?P<dataset>\w+)\.py')


def load_hparam_grid():
    spec = importlib.util.spec_from_file_location(
        'hparam_grid', REPO / 'tools' / 'analysis_tools' / 'hparam_grid.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hparam_grid = load_hparam_grid()


@pytest.fixture(scope='module', autouse=True)
def memoised_config_paths():
    """mmengine re-reads mmpretrain's whole model index (~250 yaml files) for every ``mmpretrain::``
    base it resolves; the answer is a pure function of its arguments, so memoise it here."""
    original = Config.__dict__['_get_cfg_path']
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Config, '_get_cfg_path', staticmethod(functools.lru_cache(None)(original.__func__)))
        yield


def build_model(cfg):
    init_default_scope(cfg.default_scope)
    return MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None)))


def run(*args):
    """Run a repo tool in a fresh process, as a user would; fail with its output."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=900, env=dict(os.environ, OMP_NUM_THREADS='2'))
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------- configs

def test_every_dataset_arch_and_method_has_a_config():
    expected = {f'ef-{arch}-{method}_8xb128-{epochs}e_{dataset}.py'
                for dataset, (_, _, epochs, _) in DATASETS_EXPECTED.items()
                for arch in ('l1', 'l3', 'l7') for method in METHODS_EXPECTED}
    expected |= {f'ef-l7-{method}_8xb128-{reg}-200e_{dataset}.py' for dataset in DATASETS_EXPECTED
                 if dataset != 'food101' for method in ('full', 'petah2') for reg in REGULARISED}
    assert len(expected) == 6 * 3 * 8 + 5 * 2 * 3
    assert {path.name for path in FGVC.glob('*.py')} == expected


@pytest.mark.parametrize('name', sorted(path.name for path in FGVC.glob('*.py')))
def test_config_is_what_its_name_says(name):
    parts = NAME.fullmatch(name)
    assert parts, f'{name} does not follow ef-<arch>-<method>_8xb128[-ra|-do|-ra-do]-<E>e_<dataset>.py'
    arch, reg = parts['arch'], parts['reg'] or ''
    dataset_type, num_classes, epochs, splits = DATASETS_EXPECTED[parts['dataset']]
    method, ranks, lr_mult = METHODS_EXPECTED[parts['method']]
    cfg = Config.fromfile(FGVC / name)

    backbone = cfg.model.backbone
    plan = build_plan(**backbone.adapter)
    assert (plan.method, {group: a['rank'] for group, a in plan.adapters.items()}) == (method, ranks)
    assert (backbone.type, backbone.arch, backbone.out_indices, backbone.reshape_last_feat) == (
        'PETAHEfficientFormer', arch, [3], False)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=EF.ef_checkpoints[arch])
    assert (cfg.model.neck.type, cfg.model.head.in_channels) == ('GlobalAveragePooling', EF.ef_channels[arch][-1])

    assert int(parts['epochs']) == cfg.train_cfg.max_epochs == epochs
    loaders = (cfg.train_dataloader, cfg.val_dataloader, cfg.test_dataloader)
    assert [(loader.dataset.type, loader.dataset.split) for loader in loaders] == [
        (dataset_type, split) for split in splits]
    assert cfg.model.head.num_classes == cfg.data_preprocessor.num_classes == num_classes
    assert len(DATASETS.get(dataset_type).METAINFO['classes']) == num_classes
    assert cfg.train_dataloader.batch_size == 128 and cfg.auto_scale_lr.base_batch_size == 8 * 128

    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 5e-3, 2e-4)
    assert cfg.optim_wrapper.paramwise_cfg == dict(custom_keys={'backbone': dict(lr_mult=lr_mult)})
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, cosine.type, cosine.begin) == ('LinearLR', 2, 'CosineAnnealingLR', 2)

    train_types = [t.type for t in cfg.train_dataloader.dataset.pipeline]
    assert train_types[1:3] == ['RandomResizedCrop', 'RandomFlip']
    assert cfg.train_dataloader.dataset.pipeline[1].scale == 224
    assert ('RandAugment' in train_types) == ('ra' in reg)
    head = ('DropoutLinearClsHead', 0.1) if 'do' in reg else ('LinearClsHead', None)
    assert (cfg.model.head.type, cfg.model.head.get('dropout_rate')) == head


@pytest.mark.parametrize('method', list(METHODS_EXPECTED))
def test_lr_factor_reaches_exactly_what_the_method_trains(method):
    cfg = Config.fromfile(FGVC / f'ef-l1-{method}_8xb128-200e_aircraft.py')
    cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult = 7.0  # as the grid tool sets it
    model = build_model(cfg)
    # What each method trains, from the module types of a plain EfficientFormer, not from the injector.
    plain = dict(DenseEfficientFormer(arch='l1', out_indices=[3], reshape_last_feat=False).named_modules())
    attn = [n for n in plain if re.search(r'token_mixer\.(qkv|proj)$', n)]
    mlp = [n for n, m in plain.items() if isinstance(m, nn.Linear) and re.search(r'mlp\.fc[12]$', n)]
    convs = [n for n, m in plain.items() if isinstance(m, nn.Conv2d)]
    lora = lambda layers: {f'backbone.{n}.adapter.lora_{f}' for n in layers for f in 'AB'}  # noqa: E731
    backbone_trained = {
        'frozen': set(),
        'full': {f'backbone.{n}' for n, _ in plain[''].named_parameters()},
        'attn-ft': {f'backbone.{n}.{p}' for n in attn for p in ('weight', 'bias')},
        'lora-attn-r8': lora(attn), 'lora-attn-r16': lora(attn),
        'lora-attn-mlp-r8': lora(attn) | lora(mlp),
        'petah1': lora(attn) | lora(convs), 'petah2': lora(attn) | lora(convs),
    }[method] | {'backbone.norm3.weight', 'backbone.norm3.bias'}  # the task-owned output norm trains with any method
    names = {id(p): n for n, p in model.named_parameters()}
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    lr_of = {names[id(p)]: group['lr'] for group in groups for p in group['params']}
    head = {'head.fc.weight', 'head.fc.bias'}
    assert set(lr_of) == backbone_trained | head  # frozen parameters stay out of the optimizer
    assert all(lr_of[n] == pytest.approx(5e-3) for n in head)
    assert all(lr_of[n] == pytest.approx(7 * 5e-3) for n in backbone_trained)


# ------------------------------------------------------------------------------- dropout head

def test_dropout_head_drops_only_while_training():
    init_default_scope('mmpretrain')
    head = MMPRETRAIN_MODELS.build(dict(type='DropoutLinearClsHead', num_classes=5, in_channels=4000,
                                        dropout_rate=0.1))
    assert isinstance(head, DropoutLinearClsHead)
    plain = LinearClsHead(num_classes=5, in_channels=4000)
    plain.load_state_dict(head.state_dict())
    feats = (torch.rand(3, 4000) + 1, )
    head.eval()
    torch.testing.assert_close(head(feats), plain(feats))
    head.train()
    dropped = head.pre_logits(feats)
    assert 0.07 < (dropped == 0).float().mean() < 0.13
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], feats[0][kept] / 0.9)
    with pytest.raises(ValueError, match='dropout_rate must lie in'):
        DropoutLinearClsHead(num_classes=5, in_channels=4, dropout_rate=1.0)


# ----------------------------------------------------------------------------- Food-101 split

def fake_food101(root: Path, train_per_class: int = 53, test_per_class: int = 2) -> Path:
    """The food-101 layout with three classes of tiny images; ids are shuffled, as in the real lists."""
    lines = {'train': [], 'test': []}
    for label, name in enumerate(FOOD101_CATEGORIES[:3]):
        (root / 'images' / name).mkdir(parents=True)
        for index in range(train_per_class + test_per_class):
            image_id = (index * 7919 + label) % 100003
            Image.new('RGB', (8, 8), (40 * label, index, 0)).save(root / 'images' / name / f'{image_id}.jpg')
            lines['train' if index < train_per_class else 'test'].append(f'{name}/{image_id}')
    (root / 'meta').mkdir()
    for split, entries in lines.items():
        (root / 'meta' / f'{split}.txt').write_text('\n'.join(entries) + '\n')
    return root


def names_of(dataset) -> set:
    return {'/'.join(Path(info['img_path']).parts[-2:]) for info in dataset.load_data_list()}


def test_food101_holds_out_50_images_per_class(tmp_path):
    root = fake_food101(tmp_path / 'food-101')
    splits = {split: names_of(Food101WithVal(str(root), split=split))
              for split in ('train', 'val', 'trainval', 'test')}
    assert len(splits['val']) == 3 * 50 and len(splits['train']) == 3 * 3 and len(splits['test']) == 3 * 2
    assert splits['train'] | splits['val'] == splits['trainval'] and not splits['train'] & splits['val']
    # The rule, recomputed independently: per class, the 50 images whose SHA-1 of "class/id.jpg" is smallest.
    by_class = {}
    for name in splits['trainval']:
        by_class.setdefault(name.split('/')[0], []).append(name)
    expected = {name for names in by_class.values()
                for name in sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())[:50]}
    assert splits['val'] == expected


def test_food101_split_ignores_file_order_and_data_root(tmp_path):
    root = fake_food101(tmp_path / 'food-101')
    held_out = names_of(Food101WithVal(str(root), split='val'))
    train_list = root / 'meta' / 'train.txt'
    train_list.write_text('\n'.join(reversed(train_list.read_text().split())) + '\n')
    (tmp_path / 'elsewhere').symlink_to(root)
    assert names_of(Food101WithVal(str(tmp_path / 'elsewhere'), split='val')) == held_out


def test_food101_config_loads_images_and_rejects_bad_splits(tmp_path):
    root = fake_food101(tmp_path / 'food-101')
    cfg = Config.fromfile(FGVC / 'ef-l1-petah2_8xb128-100e_food101.py')
    init_default_scope('mmpretrain')
    val = DATASETS.build(dict(cfg.val_dataloader.dataset, data_root=str(root),
                              pipeline=[dict(type='LoadImageFromFile')]))
    assert len(val) == 150 and val[0]['img'].shape == (8, 8, 3)
    with pytest.raises(ValueError, match="split must be one of .* got 'validation'"):
        Food101WithVal(str(root), split='validation')
    with pytest.raises(ValueError, match="class 'apple_pie' has 53 training images.*num_val_per_class=53"):
        Food101WithVal(str(root), split='train', num_val_per_class=53)


# -------------------------------------------------------------------------------- grid tool

def grid_main(monkeypatch, *argv):
    monkeypatch.setattr(sys, 'argv', ['hparam_grid.py', *map(str, argv)])
    hparam_grid.main()


def test_grid_defaults_follow_table7(tmp_path, monkeypatch, capsys):
    grid_main(monkeypatch, TOY, '--work-dir', tmp_path, '--dry-run')
    written = sorted(tmp_path.glob('*.py'))
    assert len(written) == 3 * 4 * 4  # lr x weight decay x adapter LR factor
    points = set()
    for path in written:
        cfg = Config.fromfile(path)
        points.add((cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay,
                    cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult))
        assert cfg.work_dir == str(tmp_path / path.stem)
    assert points == {(lr, wd, mult) for lr in (0.001, 0.005, 0.01) for wd in (0, 2e-4, 2e-3, 2e-2)
                      for mult in (0.1, 1, 5, 10)}
    assert capsys.readouterr().out.count('tools/train.py') == 48
    frozen = hparam_grid.build_grid('frozen', argparse.Namespace(lr=None, weight_decay=None, lr_mult=None))
    assert {point.lr for point in frozen} == {0.005, 0.01, 0.05} and {p.lr_mult for p in frozen} == {None}


def test_grid_refuses_what_it_cannot_search(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match='split is .test. .CUB has no validation split'):
        grid_main(monkeypatch, FGVC / 'ef-l1-petah2_8xb128-200e_cub.py', '--work-dir', tmp_path, '--dry-run')
    frozen = FGVC / 'ef-l1-frozen_8xb128-200e_dtd.py'
    with pytest.raises(ValueError, match="method 'frozen' trains no backbone parameter"):
        grid_main(monkeypatch, frozen, '--work-dir', tmp_path, '--dry-run', '--lr-mult', '1')


def write_scalars(run_dir: Path, accuracy_by_epoch: dict, timestamp: str = '20240101_000000'):
    """What mmengine's LocalVisBackend writes: one JSON line per logged step."""
    path = run_dir / timestamp / 'vis_data' / 'scalars.json'
    path.parent.mkdir(parents=True)
    lines = [dict(loss=1.0, lr=0.005, epoch=epoch, iter=epoch * 4, step=epoch * 4) for epoch in accuracy_by_epoch]
    lines += [{'accuracy/top1': acc, 'data_time': 0.01, 'time': 0.1, 'step': epoch}
              for epoch, acc in accuracy_by_epoch.items()]
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')


def test_grid_collects_final_accuracy_into_the_results_file(tmp_path, monkeypatch):
    args = ['--work-dir', tmp_path, '--lr', '0.005', '0.01', '--weight-decay', '0', '--lr-mult', '1', '5',
            '--cfg-options', 'train_cfg.max_epochs=8']
    final = {'lr0.005_wd0_mult1': 70.0, 'lr0.005_wd0_mult5': 82.5, 'lr0.01_wd0_mult1': 64.0}
    for point, accuracy in final.items():  # a higher accuracy before the last epoch must not count
        write_scalars(tmp_path / point, {4: 99.0, 8: accuracy})
    write_scalars(tmp_path / 'lr0.01_wd0_mult5', {4: 99.0})  # still running
    with pytest.raises(RuntimeError, match='1 of 4 points .* at step 8 .*: lr0.01_wd0_mult5$'):
        grid_main(monkeypatch, TOY, '--collect', *args)
    write_scalars(tmp_path / 'lr0.01_wd0_mult5', {8: 81.0}, timestamp='20240102_000000')  # resumed, finished
    grid_main(monkeypatch, TOY, '--collect', *args)

    results = json.loads((tmp_path / 'hparam_grid.json').read_text())
    assert set(results) == {'results', 'best'}
    adapters = sum(p.numel() for n, p in build_model(Config.fromfile(TOY)).backbone.named_parameters()
                   if '.adapter.' in n)
    flops = results['best'].pop('flops')
    assert results['best'] == dict(arch='l1', method='petah2', dataset='toy-cls', lr=0.005, weight_decay=0.0,
                                   lr_mult=5.0, accuracy=82.5, params=adapters)
    assert sorted((r['lr'], r['lr_mult'], r['accuracy']) for r in results['results']) == [
        (0.005, 1.0, 70.0), (0.005, 5.0, 82.5), (0.01, 1.0, 64.0), (0.01, 5.0, 81.0)]
    assert all(r['flops'] == flops for r in results['results'])


def test_grid_flops_match_mmpretrain_model_zoo():
    """GFLOPs at the 224 test crop, against mmpretrain's metafile for the same EfficientFormer."""
    metafile = Path(mmpretrain.__file__).parent / '.mim' / 'configs' / 'efficientformer' / 'metafile.yml'
    zoo = {m['Name']: m['Metadata']['FLOPs'] / 1e9 for m in yaml.safe_load(metafile.read_text())['Models']}
    stats = hparam_grid.model_stats(Config.fromfile(FGVC / 'ef-l1-petah2_8xb128-200e_dtd.py'))
    assert stats['flops'] == pytest.approx(zoo['efficientformer-l1_3rdparty_8xb128_in1k'], rel=0.02)
    assert (stats['arch'], stats['method']) == ('l1', 'petah2')


# ---------------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_toy_training_resumes_and_tests_from_its_checkpoint(tmp_path):
    data = make_toy_classification(tmp_path / 'toy_cls')['root']
    backbone = make_toy_backbone(tmp_path / 'toy_backbone.pth')
    config = write_toy_user_config(tmp_path / 'toy_user_config.py', TOY, data, backbone, randomness=dict(seed=0))
    work = tmp_path / 'work'
    first = run('tools/train.py', config, '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=2')
    assert 'Epoch(train) [2][4/4]' in first and (work / 'epoch_2.pth').exists()
    assert re.search(r'Epoch\(val\) \[2\]\[2/2\] +accuracy/top1: \d', first)

    resumed = run('tools/train.py', config, '--work-dir', work, '--resume',
                  '--cfg-options', 'train_cfg.max_epochs=3')
    assert 'resumed epoch: 2, iter: 8' in resumed
    assert 'Epoch(train) [3][4/4]' in resumed and 'Epoch(train) [1]' not in resumed
    checkpoint = torch.load(work / 'epoch_3.pth', map_location='cpu')
    assert (checkpoint['meta']['epoch'], checkpoint['meta']['iter']) == (3, 12)
    accuracy = hparam_grid.final_metric(work, 'accuracy/top1', 3)
    assert accuracy > 50  # four classes: chance is 25 %

    tested = run('tools/test.py', config, work / 'epoch_3.pth', '--work-dir', tmp_path / 'test')
    top1 = re.search(r'Epoch\(test\) \[2/2\] +accuracy/top1: ([\d.]+)', tested)
    assert top1 and float(top1[1]) == pytest.approx(accuracy, abs=1e-3)
