"""Which backbone families export: ``python -m petah_mm.deploy.onnx.families [--size 64]``.

Every family of :data:`petah_mm.models.families.FAMILIES` (``count_params.py --families``) plus
EfficientFormer-L3 and L7 and EfficientNet-Lite0 (TF "same" padding), with PETAH-2 adapters of random values,
merged and exported as a trunk (image -> the backbone's feature maps, dynamic batch), then run in ONNX Runtime
against PyTorch's unmerged backbone; and exported in the multi-task form (task tensors as graph inputs) and
compared likewise. Prints one row per family, compared at batch 2 where the batch axis works (else at batch 1).
"""
import argparse
import collections

import numpy as np
import onnx
import torch

from ...adapters.presets import preset
from ...models.families import FAMILIES, TIMM, build_backbone
from ...testing import randomise_adapters
from .export import batch_axis_works, onnx_bytes
from .multitask import BackboneWithTaskInputs, task_tensor_names
from .runtime import cpu_session
from .verify import LOGITS_RTOL

EXTRA = {'EfficientFormer-L3 (petah_mm)': dict(type='PETAHEfficientFormer', arch='l3'),
         'EfficientFormer-L7 (petah_mm)': dict(type='PETAHEfficientFormer', arch='l7'),
         # TF "same" padding: its stride-2 Conv2dSame pad from the input's shape in the graph
         'EfficientNet-Lite0 (timm)': dict(type='PETAHBackbone',
                                           backbone=dict(TIMM, model_name='tf_efficientnet_lite0'))}


def worst_relative(actual, expected) -> float:
    return max(float(np.abs(a - e).max() / max(np.abs(e).max(), 1e-30)) for a, e in zip(actual, expected))


@torch.no_grad()
def check_family(backbone_cfg: dict, size: int) -> str:
    backbone = randomise_adapters(build_backbone(backbone_cfg, preset('petah2'))).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = [f.numpy() for f in backbone(x)]
    outputs = [f'feat{i}' for i in range(len(expected))]
    names = task_tensor_names(backbone)
    feeds = {n: backbone.state_dict()[n] for n in names}
    wrapper = BackboneWithTaskInputs(backbone, names)
    shared = onnx_bytes(wrapper, x[:1], outputs, True, feeds)
    backbone.merge_adapters()
    try:
        merged = onnx_bytes(backbone, x[:1], outputs, True)
        dynamic = batch_axis_works(merged, (size, size))
        if not dynamic:
            merged = onnx_bytes(backbone, x[:1], outputs, False)
    finally:
        backbone.unmerge_adapters()
    if not dynamic:
        shared = onnx_bytes(wrapper, x[:1], outputs, False, feeds)
        x, expected = x[:1], [e[:1] for e in expected]
    got_merged = cpu_session(merged).run(None, {'input': x.numpy()})
    got_shared = cpu_session(shared).run(None, {'input': x.numpy(), **{k: v.numpy() for k, v in feeds.items()}})
    ops = collections.Counter(n.op_type for n in onnx.load_from_string(merged).graph.node)
    rel_m, rel_s = worst_relative(got_merged, expected), worst_relative(got_shared, expected)
    verdict = 'ok' if max(rel_m, rel_s) <= LOGITS_RTOL else 'FAIL'
    return (f'{"dynamic" if dynamic else "1 (the trace fixes it)"} | {rel_m:.2g} | {rel_s:.2g} | '
            f'{sum(ops.values())} nodes, {len(merged) / 1e6:.1f} MB | {verdict}')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=64)
    args = parser.parse_args(argv)
    print(f'| family ({args.size}x{args.size}) | batch | merged: relative difference | multi-task form | '
          'merged graph | verdict |\n|---|---|---|---|---|---|')
    for family, cfg in {**FAMILIES, **EXTRA}.items():
        try:
            row = check_family(cfg, args.size)
        except Exception as error:  # a family that does not export is a row of the table, not the end of it
            row = f'- | - | - | - | FAIL: {type(error).__name__}: {str(error).splitlines()[0][:120]}'
        print(f'| {family} | {row}', flush=True)


if __name__ == '__main__':
    main()
