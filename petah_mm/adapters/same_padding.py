"""TensorFlow "same" padding: the Conv2d subclasses whose forward pads its input, and how each pads it.

timm's ``Conv2dSame`` (every stride-2 convolution of a ``tf_*`` model: padding a fixed amount would not
give TF's output for every input size) and mmcv's ``Conv2dAdaptivePadding`` are ``nn.Conv2d`` layers with
``padding=0`` whose forward first pads the input by an amount computed from the input's size, the kernel,
the stride and the dilation: ``(ceil(i / s) - 1)·s + (k - 1)·d + 1 - i`` pixels, the odd one at the bottom
and right. An adapted layer pads with its class's own function, then runs every kernel it computes with
(W, W + ΔW, LoRA's k×k A) unpadded: the adapted output is the frozen layer's with W + ΔW for any input
size, and a merged layer traces to the ops of the plain one.
"""
import math
import sys
from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.conv2d_adaptive_padding import Conv2dAdaptivePadding

#: pads an input for a kernel of ``kernel_size`` with ``stride`` and ``dilation``: ``pad(x, kernel_size, stride,
#: dilation)``
PadInput = Callable[[torch.Tensor, Sequence[int], Sequence[int], Sequence[int]], torch.Tensor]


def adaptive_padding(x: torch.Tensor, kernel_size: Sequence[int], stride: Sequence[int],
                     dilation: Sequence[int]) -> torch.Tensor:
    """The padding of mmcv's ``Conv2dAdaptivePadding.forward`` (mmcv 2.x), step for step (``math.ceil``, a pad
    only where a side needs one), so that a trace records the ops mmcv's own layer records."""
    img_h, img_w = x.size()[-2:]
    pad_h = max((math.ceil(img_h / stride[0]) - 1) * stride[0] + (kernel_size[0] - 1) * dilation[0] + 1 - img_h, 0)
    pad_w = max((math.ceil(img_w / stride[1]) - 1) * stride[1] + (kernel_size[1] - 1) * dilation[1] + 1 - img_w, 0)
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
    return x


#: the module of timm's ``Conv2dSame``; its ``conv2d_same`` is ``pad_same`` (imported there) then an unpadded conv
TIMM_CONV2D_SAME = 'timm.layers.conv2d_same'


def same_padding_classes() -> Dict[type, PadInput]:
    """Conv2d subclass -> the input padding its forward applies before an unpadded ``F.conv2d``.

    timm's class is looked up among the loaded modules, not imported: a ``Conv2dSame`` exists only once timm
    is loaded, and importing timm would add half a second to every ``import petah_mm``."""
    classes = {Conv2dAdaptivePadding: adaptive_padding}
    timm_conv = sys.modules.get(TIMM_CONV2D_SAME)
    if timm_conv is not None:
        classes[timm_conv.Conv2dSame] = timm_conv.pad_same
    return classes
