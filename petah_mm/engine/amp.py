"""``--amp`` on any machine: fp16 with a dynamic loss scale on CUDA, bf16 autocast on CPU.

mmengine's ``AmpOptimWrapper`` asserts a GPU/NPU/MLU at construction, so CPU training with
``--amp`` died. bf16 has fp32's exponent range, so it needs no loss scale; the parameters stay fp32
master weights and the optimizer steps on fp32 gradients, exactly as with ``OptimWrapper``.
"""
import functools
import importlib
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

#: mmcv ops whose CPU kernels take fp32 only ("expected scalar type Float but found BFloat16"), by
#: the autograd function mmdet reaches them through: nms (RPN, box heads) and RoIAlign (RoI heads).
MMCV_FP32_OPS = (('mmcv.ops.nms', 'NMSop'), ('mmcv.ops.roi_align', 'RoIAlignFunction'))


def low_precision_cpu(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.device.type == 'cpu' and tensor.dtype in (torch.bfloat16,
                                                                                                 torch.float16)


def in_fp32(method):
    """``method(ctx, *args)`` run on fp32 copies of bf16/fp16 CPU tensors, its floating outputs cast back."""

    @functools.wraps(method)
    def run(ctx, *args):
        dtype = next((a.dtype for a in args if low_precision_cpu(a)), None)
        if dtype is None:
            return method(ctx, *args)
        outputs = method(ctx, *(a.float() if low_precision_cpu(a) else a for a in args))
        single = isinstance(outputs, torch.Tensor)
        outputs = [o.to(dtype) if isinstance(o, torch.Tensor) and o.is_floating_point() else o
                   for o in ([outputs] if single else outputs)]
        return outputs[0] if single else tuple(outputs)

    return run


def run_mmcv_ops_in_fp32() -> None:
    """Let mmcv's fp32-only CPU ops take bf16 (or fp16) tensors, as their CUDA kernels take fp16:
    they compute on fp32 copies and return (and pass gradients back) in the caller's dtype."""
    for module, name in MMCV_FP32_OPS:
        function = getattr(importlib.import_module(module), name)
        if not getattr(function, 'fp32_on_cpu', False):
            function.forward = staticmethod(in_fp32(function.forward))
            function.backward = staticmethod(in_fp32(function.backward))
            function.fp32_on_cpu = True


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose forward (``optim_context``) runs under bf16 autocast.

    Args:
        device_type: the autocast device, ``'cpu'`` (default) or ``'cuda'``.
        **kwargs: ``OptimWrapper``'s (``optimizer``, ``accumulative_counts``, ``clip_grad``).
    """

    def __init__(self, device_type: str = 'cpu', **kwargs):
        super().__init__(**kwargs)
        self.device_type = device_type
        run_mmcv_ops_in_fp32()

    @contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            yield


def amp_optim_wrapper(optim_wrapper: dict) -> dict:
    """The ``optim_wrapper`` config for ``--amp``: mmengine's ``AmpOptimWrapper`` (fp16, dynamic loss
    scale) when CUDA is available, else :class:`BF16OptimWrapper` on the CPU."""
    if optim_wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        raise ValueError(f"--amp replaces optim_wrapper.type='OptimWrapper', but the config sets "
                         f"{optim_wrapper['type']!r}; drop --amp or set the wrapper's type yourself")
    if torch.cuda.is_available():
        return dict(optim_wrapper, type='AmpOptimWrapper', loss_scale='dynamic')
    return dict(optim_wrapper, type='BF16OptimWrapper')
