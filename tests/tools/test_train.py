"""Detection, instance and semantic segmentation end to end on toy data, and what each method trains."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from petah_mm.datasets import make_toy_ade20k, make_toy_backbone, make_toy_coco, write_toy_user_config
from petah_mm.models import DenseEfficientFormer

REPO = Path(__file__).resolve().parents[1]
DET_TOY = REPO / 'configs/toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py'
SEG_TOY = REPO / 'configs/toy/fpn_ef-l1-petah2_toy-ade20k.py'


def run(*args, env=None):
    """Run a repo tool in a fresh process, as a user would; fail with its output."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=1200, env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def toy_config(tmp_path, base, data_root, **overrides) -> Path:
    """A user config on top of a toy config: data in tmp_path, a toy backbone, batch 2 and a log line per iteration."""
    return write_toy_user_config(tmp_path / 'toy_user_config.py', base, data_root,
                                 make_toy_backbone(tmp_path / 'toy_backbone.pth'), batch_size=2,
                                 default_hooks=dict(logger=dict(interval=1)), **overrides)


@pytest.mark.slow
def test_detection_train_resume_test(tmp_path):
    data = make_toy_coco(tmp_path / 'coco', num_train=4, num_val=2)['root']
    config = toy_config(tmp_path, DET_TOY, data)
    work = tmp_path / 'work'
    first = run('tools/train.py', config, '--work-dir', work, '--cfg-options', 'train_cfg.max_epochs=1')
    assert (work / 'epoch_1.pth').exists() and 'Epoch(train) [1]' in first
    resumed = run('tools/train.py', config, '--work-dir', work, '--resume',
                  '--cfg-options', 'train_cfg.max_epochs=2')
    assert 'resumed epoch: 1' in resumed
    assert 'Epoch(train) [2]' in resumed and 'Epoch(train) [1]' not in resumed
    ckpt = torch.load(work / 'epoch_2.pth', map_location='cpu')  # weights_only: petah_mm's allow-list
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4
    # after 4 iterations no score passes the usual 0.05; keep every box so COCO eval has input
    out = run('tools/test.py', config, work / 'epoch_2.pth', '--work-dir', tmp_path / 'test',
              '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.0')
    assert re.search(r'coco/bbox_mAP: \d', out) and re.search(r'coco/segm_mAP: \d', out)


@pytest.mark.slow
def test_segmentation_train_resume_test(tmp_path):
    data = make_toy_ade20k(tmp_path / 'ade', num_train=4, num_val=2)['root']
    config = toy_config(tmp_path, SEG_TOY, data)
    work = tmp_path / 'work'
    run('tools/train.py', config, '--work-dir', work,
        '--cfg-options', 'train_cfg.max_iters=2', 'default_hooks.checkpoint.interval=2')
    assert (work / 'iter_2.pth').exists()
    resumed = run('tools/train.py', config, '--work-dir', work, '--resume',
                  '--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                  'default_hooks.checkpoint.interval=2')
    assert 'resumed epoch: 0, iter: 2' in resumed and 'Iter(train) [4/4]' in resumed
    assert 'Iter(train) [1/4]' not in resumed
    out = run('tools/test.py', config, work / 'iter_4.pth', '--work-dir', tmp_path / 'test')
    assert re.search(r'mIoU: \d', out)


def backbone_expectation(method: str, backbone: nn.Module):
    """What each method trains, written from the module types rather than from the injector."""
    convs = [n for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    attn = [n for n, m in backbone.named_modules() if re.search(r'token_mixer\.(qkv|proj)$', n)]
    lora = lambda layers: {f'backbone.{n}.adapter.lora_{f}' for n in layers for f in 'AB'}  # noqa: E731
    output_norms = {f'backbone.{n}' for n, _ in backbone.named_parameters() if re.match(r'norm\d\.', n)}
    return output_norms | {  # the task-owned output norms train under every method
        'frozen': set(),
        'full': {f'backbone.{n}' for n, _ in backbone.named_parameters()},
        'attn-ft': {f'backbone.{n}.{p}' for n in attn for p in ('weight', 'bias')},
        'lora-attn-r8': lora(attn),
        'petah1': lora(attn) | lora(convs),
        'petah2': lora(attn) | lora(convs),
    }[method]


@pytest.mark.parametrize('family', ['cascade_rcnn/cascade-mask-rcnn_ef-l1-{}_fpn_1x_coco.py',
                                    'sem_fpn/fpn_ef-l1-{}_8xb4-40k_ade20k-512x512.py'])
@pytest.mark.parametrize('method', ['frozen', 'full', 'attn-ft', 'lora-attn-r8', 'petah1', 'petah2'])
def test_trainable_parameters_of_each_method(family, method):
    cfg = Config.fromfile(REPO / 'configs' / family.format(method))
    init_default_scope(cfg.default_scope)
    model = MODELS.build(dict(cfg.model, backbone=dict(cfg.model.backbone, init_cfg=None)))
    plain = DenseEfficientFormer(arch='l1')
    expected = backbone_expectation(method, plain)
    expected |= {n for n, _ in model.named_parameters() if not n.startswith('backbone.')}  # neck and heads
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == expected
    optimized = {id(p) for group in build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
                 for p in group['params']}
    assert optimized == {id(p) for n, p in model.named_parameters() if n in expected}


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dist_train_on_cpu_keeps_ranks_identical(tmp_path):
    """torchrun, 2 processes, gloo: frozen parameters must not upset DDP, and ranks must agree."""
    data = make_toy_ade20k(tmp_path / 'ade', num_train=8, num_val=2)['root']
    config = toy_config(tmp_path, SEG_TOY, data,
                        custom_imports=dict(imports=['petah_mm', 'dist_probe'], allow_failed_imports=False),
                        custom_hooks=[dict(type='DumpTaskStateHook')])
    work = tmp_path / 'work'
    proc = subprocess.run(
        ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work),
         '--cfg-options', 'train_cfg.max_iters=3', 'train_cfg.val_interval=3', 'default_hooks.checkpoint.interval=3'],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
        env=dict(os.environ, PYTHON=sys.executable, PORT=str(free_port()),
                 PYTHONPATH=f'{REPO / "tests"}:{os.environ.get("PYTHONPATH", "")}'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Distributed training: True' in proc.stdout and 'GPU number: 2' in proc.stdout  # 2 gloo ranks
    ranks = [torch.load(work / f'task_state_rank{r}.pt') for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), f'ranks disagree on {name}'
    trained_b = [v for k, v in ranks[0].items() if k.endswith('adapter.lora_B')]
    assert trained_b and all(torch.count_nonzero(b) > 0 for b in trained_b), 'adapters did not train'
