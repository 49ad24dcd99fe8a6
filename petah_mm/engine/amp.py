"""``--amp`` on any machine: fp16 with a dynamic loss scale on CUDA, bf16 autocast on CPU.

mmengine's ``AmpOptimWrapper`` asserts a GPU/NPU/MLU at construction, so CPU training with
``--amp`` died. bf16 has fp32's exponent range, so it needs no loss scale; the parameters stay fp32
master weights and the optimizer steps on fp32 gradients, exactly as with ``OptimWrapper``.
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


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
