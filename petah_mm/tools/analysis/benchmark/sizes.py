"""Trainable parameters, adapter file size and FLOPs (merged and unmerged) of each method."""
import tempfile
from pathlib import Path

from mmengine.analysis import get_model_complexity_info

from .common import backbone_for


def gflops(model, shape):
    """With gradients enabled, as mmdet's and mmpretrain's get_flops.py count."""
    return get_model_complexity_info(model, input_shape=shape, show_table=False, show_arch=False)['flops'] / 1e9


def sizes_and_flops(args):
    results = {}
    shape = (3, args.size, args.size)
    for method in args.methods:
        backbone = backbone_for(args, method).cpu().eval()
        with tempfile.TemporaryDirectory() as tmp:
            size = backbone.save_adapter(Path(tmp) / 'adapter.safetensors')
        unmerged = gflops(backbone, shape)
        backbone.merge_adapters()
        results[method] = dict(trainable=sum(backbone.trainable_by_group().values()), adapter_mb=size / 1e6,
                               gflops_unmerged=unmerged, gflops_merged=gflops(backbone, shape))
    return results
