"""Autocast state for the low-rank kernels, the same on torch 2.1 (the GPU wheels' torch) and >= 2.4.

torch 2.4 added the device-generic ``torch.amp.custom_fwd(device_type=...)``, ``torch.get_autocast_dtype``
and ``torch.is_autocast_enabled(device_type)``; torch 2.1 has them for CUDA only (``torch.cuda.amp``) or
under per-device names. The kernels cast explicitly to the dtype recorded in forward, so they are exact
whichever decorator is found; the decorators add that ``backward`` runs under the forward's autocast state.
"""
import torch


def autocast_enabled(device_type: str) -> bool:
    """``torch.is_autocast_enabled(device_type)`` (torch >= 2.4), also on torch 2.1."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return torch.is_autocast_enabled() if device_type == 'cuda' else torch.is_autocast_cpu_enabled()


def autocast_dtype(device_type: str):
    """The dtype autocast computes matrix products in on ``device_type``, or None when it is off there."""
    if not autocast_enabled(device_type):
        return None
    if hasattr(torch, 'get_autocast_dtype'):
        return torch.get_autocast_dtype(device_type)
    return torch.get_autocast_gpu_dtype() if device_type == 'cuda' else torch.get_autocast_cpu_dtype()


def custom_fwd(device_type: str):
    """``torch.amp.custom_fwd(device_type=...)``: forward runs under the caller's autocast state."""
    if hasattr(torch.amp, 'custom_fwd'):
        return lambda forward: torch.amp.custom_fwd(forward, device_type=device_type)
    return torch.cuda.amp.custom_fwd if device_type == 'cuda' else (lambda forward: forward)


def custom_bwd(device_type: str):
    """``torch.amp.custom_bwd(device_type=...)``: backward runs under the forward's autocast state."""
    if hasattr(torch.amp, 'custom_bwd'):
        return lambda backward: torch.amp.custom_bwd(backward, device_type=device_type)
    return torch.cuda.amp.custom_bwd if device_type == 'cuda' else (lambda backward: backward)
