"""Self-check of petah_mm on a CUDA machine: mmcv's CUDA ops, the adapted backbone on CUDA against the
CPU (training and inference), a 20-iteration ``--amp`` training run of the toy detector, and the
benchmark on the GPU.

    python tools/analysis_tools/gpu_check.py [--work-dir work_dirs/gpu_check] [--device cuda:0]

Without a CUDA device it says so and exits with status 0 (nothing to check). Any failed check
makes it exit with status 1; every check prints PASS or FAIL with the reason.
"""
import argparse
import os
import subprocess
import sys
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[3]
DET_TOY = REPO / 'configs/toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py'
#: the input batch (N, C, H, W) of the backbone checks: a detector's aspect ratio, seconds on any GPU
INPUT_SHAPE = (2, 3, 128, 96)


def check_mmcv_ops(device):
    """nms and RoIAlign run on CUDA and agree with their CPU versions."""
    from mmcv.ops import RoIAlign, nms
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(200, 2, generator=g) * 40], 1)
    scores = torch.rand(200, generator=g)
    _, keep_cpu = nms(boxes, scores, 0.5)
    _, keep_gpu = nms(boxes.to(device), scores.to(device), 0.5)
    assert torch.equal(keep_cpu, keep_gpu.cpu()), 'nms keeps different boxes on CUDA and CPU'
    feats = torch.randn(2, 8, 32, 32, generator=g)
    rois = torch.cat([torch.tensor([[0.], [1.]]).repeat(4, 1), boxes[:8] / 4], 1)
    align = RoIAlign((7, 7), spatial_scale=1.0, sampling_ratio=2)
    torch.testing.assert_close(align(feats.to(device), rois.to(device)).cpu(), align(feats, rois), rtol=1e-4,
                               atol=1e-4)
    return f'nms kept {len(keep_gpu)} of 200 boxes as on the CPU; RoIAlign matches the CPU'


def adapted_backbone_grads(model, x, dtype=None):
    """Outputs and parameter gradients of the outputs' projection on fixed random directions: gradients of
    order one, which fp16 holds without a loss scale (a mean of squares gives ~1e-11 and flushes to zero)."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        outputs = model(x)
    g = torch.Generator().manual_seed(0)
    sum((o.float() * torch.randn(o.shape, generator=g).to(o.device)).sum() for o in outputs).backward()
    grads = {n: p.grad.float().cpu() for n, p in model.named_parameters() if p.grad is not None}
    return [o.float().cpu() for o in outputs], grads


def relative_error(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def randomised_petah_l1():
    """PETAH-2 EfficientFormer-L1 with training-like adapter values (random weights, nothing downloaded)."""
    from petah_mm.models import PETAHEfficientFormer
    from petah_mm.testing import randomise_adapters
    torch.manual_seed(0)
    return randomise_adapters(PETAHEfficientFormer(arch='l1', adapter=dict(method='petah', rank=8, conv_rank=2)))


def has_bf16(device) -> bool:
    """torch's bf16 autocast raises on GPUs without bf16 (T4 and V100 on torch 2.1)."""
    return torch.device(device).type != 'cuda' or torch.cuda.is_bf16_supported()


def check_backbone(device):
    """PETAH-2 EfficientFormer-L1 training: outputs and gradients on CUDA (fp32, fp16 and, where the GPU
    has it, bf16 autocast) against the CPU in fp32."""
    model = randomised_petah_l1().train()
    x = torch.randn(INPUT_SHAPE)
    cpu_out, cpu_grads = adapted_backbone_grads(model, x)
    model.to(device)
    # bf16 keeps 8 bits of mantissa: the stem's gradients, summed over every pixel, are off by up to ~7 %
    bf16 = has_bf16(device)
    precisions = [(None, 1e-3), (torch.float16, 3e-2)] + ([(torch.bfloat16, 1e-1)] if bf16 else [])
    lines = [] if bf16 else ['bfloat16 not checked: this GPU has no bf16']
    for dtype, tolerance in precisions:
        out, grads = adapted_backbone_grads(model, x.to(device), dtype)
        worst = max([relative_error(a, b) for a, b in zip(out, cpu_out)] +
                    [relative_error(grads[n], cpu_grads[n]) for n in cpu_grads])
        name = 'fp32' if dtype is None else str(dtype).split('.')[-1]
        assert worst < tolerance, f'{name}: relative error {worst:.2e} against the CPU exceeds {tolerance}'
        lines.append(f'{name} worst relative error {worst:.1e} (< {tolerance})')
    return '; '.join(lines)


@torch.no_grad()
def check_inference(device):
    """The same backbone at inference, unmerged (its thin and fused forms) and merged, on CUDA (fp32 and
    fp16 autocast) against the CPU unmerged in fp32."""
    model = randomised_petah_l1().eval()
    x = torch.randn(INPUT_SHAPE)
    cpu_out = [o.clone() for o in model(x)]
    model.to(device)
    lines = []
    for deployment in ('unmerged', 'merged'):
        if deployment == 'merged':
            model.merge_adapters()
        for dtype, tolerance in ((None, 1e-3), (torch.float16, 3e-2)):
            with torch.autocast(torch.device(device).type, dtype=dtype, enabled=dtype is not None):
                out = model(x.to(device))
            worst = max(relative_error(a.float().cpu(), b) for a, b in zip(out, cpu_out))
            name = f"{deployment} {'fp32' if dtype is None else 'fp16'}"
            assert worst < tolerance, f'{name}: relative error {worst:.2e} against the CPU exceeds {tolerance}'
            lines.append(f'{name} {worst:.1e}')
    return f"worst relative errors (< 1e-3 fp32, < 3e-2 fp16): {'; '.join(lines)}"


def run(args, *command):
    proc = subprocess.run([sys.executable, *map(str, command)], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, f'{command[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}'
    return proc.stdout + proc.stderr


def check_amp_training(args, iterations=20, cfg_options=()):
    """tools/train.py --amp (on CUDA fp16 with a dynamic loss scale, else bf16) on the toy detector for
    ``iterations`` iterations of batch 2, no validation (the test suite's CPU rehearsal runs 1, and shrinks
    the images and RoIs through ``cfg_options``: bf16 is emulated on CPUs without native bf16)."""
    from petah_mm.datasets import make_toy_backbone, make_toy_coco, write_toy_user_config
    work = Path(args.work_dir).resolve()  # the runs below start in the repository, not in the caller's folder
    data = make_toy_coco(work / 'toy_coco', num_train=2 * iterations, num_val=2)['root']
    config = write_toy_user_config(work / 'toy_det_amp.py', DET_TOY, data, make_toy_backbone(work / 'toy_backbone.pth'),
                                   batch_size=2, train_cfg=dict(max_epochs=1, val_begin=2),
                                   default_hooks=dict(logger=dict(interval=min(5, iterations))))
    log = run(args, 'tools/train.py', config, '--amp', '--work-dir', work / 'train',
              *(('--cfg-options', *cfg_options) if cfg_options else ()))
    done = f'Epoch(train) [1][{iterations}/{iterations}]'
    assert done in log, f'{iterations} iterations did not run:\n{log[-2000:]}'
    wrapper = 'AmpOptimWrapper' if torch.device(args.device).type == 'cuda' else 'BF16OptimWrapper'
    assert f"type='{wrapper}'" in (work / 'train' / 'toy_det_amp.py').read_text(), f'--amp did not select {wrapper}'
    return f'toy Cascade Mask R-CNN trained {iterations} iteration(s) with {wrapper}'


def check_benchmark(args):
    """benchmark.py --device cuda --amp on EfficientFormer-L1 (a short run)."""
    out = run(args, 'tools/analysis_tools/benchmark.py', '--device', args.device, '--amp', '--arch', 'l1',
              '--methods', 'full', 'petah2', '--skip-ablations', '--repeats', '3', '--out-dir',
              Path(args.work_dir) / 'benchmark')
    return 'benchmark ran; its table:\n' + out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--device', default='cuda')
    parser.add_argument('--work-dir', default='work_dirs/gpu_check')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f'no CUDA: torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False), '
              'so there is nothing to check here. Run this on a GPU machine with a CUDA build of torch and '
              'mmcv built with CUDA ops (see the README, "GPU users").')
        return 0
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    checks = [('mmcv CUDA ops', lambda: check_mmcv_ops(args.device)),
              ('adapted backbone training, CUDA vs CPU', lambda: check_backbone(args.device)),
              ('adapted backbone inference, CUDA vs CPU', lambda: check_inference(args.device)),
              ('tools/train.py --amp, toy detector', lambda: check_amp_training(args)),
              ('benchmark.py --device cuda', lambda: check_benchmark(args))]
    failed = 0
    print(f'torch {torch.__version__}, {torch.cuda.get_device_name(args.device)}')
    for name, check in checks:
        try:
            print(f'PASS {name}: {check()}')
        except Exception:  # report every check, then fail
            failed += 1
            print(f'FAIL {name}:\n{traceback.format_exc()}')
    print(f'{len(checks) - failed} of {len(checks)} checks passed')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
