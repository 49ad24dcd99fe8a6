"""The fine-grained classification configs (PETAH Tables 3, 4 and 7): every dataset, arch and method has one,
each is what its name says, and the LR factor reaches exactly what the method trains."""
import re

import pytest
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmpretrain.registry import DATASETS
from torch import nn

from petah_mm.adapters import build_plan
from petah_mm.models import DenseEfficientFormer
from helpers import REPO, build_model

FGVC = REPO / 'configs' / 'fgvc'
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
