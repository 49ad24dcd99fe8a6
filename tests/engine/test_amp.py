"""Mixed precision: ``--amp`` trains in bf16 on the CPU (fp16 with a dynamic loss scale on CUDA),
with the low-rank kernels on and fp32 master weights."""
import argparse
import math
import re
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from torch import nn

from petah_mm.engine import BF16OptimWrapper, amp_optim_wrapper
from petah_mm.tools.analysis import gpu_check
from helpers import CLS_TOY, SEG_TOY, run


def test_amp_picks_fp16_with_loss_scale_on_cuda_and_bf16_on_cpu():
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3), clip_grad=None)
    with mock.patch('torch.cuda.is_available', return_value=False):
        assert amp_optim_wrapper(cfg) == dict(cfg, type='BF16OptimWrapper')
    with mock.patch('torch.cuda.is_available', return_value=True):
        assert amp_optim_wrapper(dict(cfg, type='OptimWrapper')) == dict(cfg, type='AmpOptimWrapper',
                                                                         loss_scale='dynamic')
    with pytest.raises(ValueError, match="'GradMonitorWrapper'.*drop --amp"):
        amp_optim_wrapper(dict(cfg, type='GradMonitorWrapper'))


def test_bf16_wrapper_runs_the_petah_backbone_in_bf16_with_fp32_masters(build_ef):
    model = build_ef().train()
    wrapper = build_optim_wrapper(model, dict(type='BF16OptimWrapper', optimizer=dict(type='AdamW', lr=1e-2)))
    assert isinstance(wrapper, BF16OptimWrapper) and isinstance(wrapper, OptimWrapper)
    adapter = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    before = {n: p.detach().clone() for n, p in adapter.items()}
    layer_dtypes = set()
    handle = model.patch_embed[0].conv.register_forward_hook(lambda m, i, out: layer_dtypes.add(out.dtype))
    with wrapper.optim_context(model):
        outputs = model(torch.randn(2, 3, 64, 64))
    handle.remove()
    assert layer_dtypes == {torch.bfloat16}  # an adapted conv computed in bf16
    kernels = {type(module).__name__ for o in outputs for module in walk_graph(o.grad_fn)}
    assert {'LowRankConv2dBackward', 'LowRankLinearBackward'} <= kernels  # the fast path under autocast
    wrapper.update_params(sum(o.float().square().mean() for o in outputs))
    assert all(p.dtype == torch.float32 for p in adapter.values())
    assert all(not torch.equal(before[n], p) for n, p in adapter.items() if n.endswith('lora_A'))


def test_bf16_wrapper_lets_mmcvs_fp32_only_cpu_ops_take_bf16():
    from mmcv.ops import RoIAlign, nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]]).bfloat16()
    scores = torch.tensor([.9, .8, .7]).bfloat16()
    features = torch.randn(1, 4, 16, 16).bfloat16().requires_grad_()
    rois = torch.tensor([[0., 1., 1., 8., 8.]])
    BF16OptimWrapper(optimizer=torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert nms(boxes, scores, 0.5)[1].tolist() == [0, 2]
        pooled = RoIAlign((3, 3), 1.0, 2)(features, rois)
    assert pooled.dtype == torch.bfloat16  # the caller's dtype, as mmdet's RoI extractor expects
    pooled.float().sum().backward()
    reference = RoIAlign((3, 3), 1.0, 2)(features.detach().float(), rois)
    torch.testing.assert_close(pooled.float(), reference, rtol=1e-2, atol=1e-2)
    assert features.grad.dtype == torch.bfloat16 and features.grad.abs().sum() > 0


def walk_graph(fn, seen=None):
    """Every autograd node behind ``fn``."""
    seen = set() if seen is None else seen
    stack = [fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_fn for next_fn, _ in node.next_functions)
    return seen


def train_with_amp(toy_config, tmp_path, base, *options, **overrides):
    """tools/train.py --amp on a toy config over the session's toy data; its log."""
    config = toy_config(base, tmp_path / 'toy_user_config.py', **overrides)
    work = tmp_path / 'work'
    log = run('tools/train.py', config, '--amp', '--work-dir', work, '--cfg-options', *options)
    assert "type='BF16OptimWrapper'" in (work / config.name).read_text()
    assert_finite_losses(log)
    return log


def assert_finite_losses(log):
    losses = re.findall(r' loss: (\S+)', log)
    assert losses and all(math.isfinite(float(loss)) for loss in losses), losses


@pytest.mark.slow
def test_amp_trains_the_toy_classifier_on_cpu(toy_config, tmp_path):
    # 8 training and 8 validation images of the toy set: one iteration per epoch; the LR warmup takes one
    log = train_with_amp(toy_config, tmp_path, CLS_TOY, 'train_cfg.max_epochs=2', 'train_dataloader.dataset.indices=8',
                         'val_dataloader.dataset.indices=8', batch_size=8)
    assert 'Epoch(train) [2][1/1]' in log and 'accuracy/top1' in log


@pytest.mark.slow
def test_amp_trains_the_toy_detector_on_cpu(tmp_path):
    """gpu_check's ``tools/train.py --amp`` check of the toy detector, with the CPU as the device: one iteration
    of batch 2 in bf16 (the CPU rehearsal of its 20 on a GPU; test_gpu_check runs its other checks), on
    half-size images with 16 RoIs per stage: emulated bf16 (CPUs without avx512_bf16) took 97 s at full size."""
    shrink = ['train_dataloader.dataset.pipeline.2.scale=(96,80)',
              *(f'model.train_cfg.rcnn.{stage}.sampler.num=16' for stage in range(3))]
    verdict = gpu_check.check_amp_training(argparse.Namespace(device='cpu', work_dir=str(tmp_path)), iterations=1,
                                           cfg_options=shrink)
    assert verdict == 'toy Cascade Mask R-CNN trained 1 iteration(s) with BF16OptimWrapper'
    dumped = Config.fromfile(tmp_path / 'train' / 'toy_det_amp.py')
    assert dumped.optim_wrapper.type == 'BF16OptimWrapper'
    assert dumped.train_dataloader.dataset.pipeline[2].scale == (96, 80)
    assert [stage.sampler.num for stage in dumped.model.train_cfg.rcnn] == [16, 16, 16]
    log, = (tmp_path / 'train').glob('*/*.log')
    log = log.read_text()
    assert_finite_losses(log)
    assert 'Epoch(train) [1][1/1]' in log and 'Epoch(val)' not in log


@pytest.mark.slow
def test_amp_trains_the_toy_segmentor_on_cpu(toy_config, tmp_path):
    log = train_with_amp(toy_config, tmp_path, SEG_TOY, 'train_cfg.max_iters=2', 'train_cfg.val_interval=4',
                         'default_hooks.checkpoint.interval=2', batch_size=2,
                         default_hooks=dict(logger=dict(interval=1)))
    assert 'Iter(train) [2/2]' in log
