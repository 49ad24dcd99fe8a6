"""ONNX Runtime sessions on the CPU, as the tools and tests open them."""
import ctypes
import ctypes.util
from pathlib import Path
from typing import Optional, Union

import onnxruntime as ort


def cpu_session(model: Union[str, Path, bytes], threads: Optional[int] = None,
                options: Optional[ort.SessionOptions] = None, arena: bool = True) -> ort.InferenceSession:
    """An ORT session on the CPU execution provider; ``threads`` caps its intra-op threads.

    ``arena=False`` turns off ORT's CPU memory arena: activations are freed after each run instead of being
    kept by every session at its peak (what the multi-task runtime does: docs/deployment.md)."""
    options = options or ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if not arena:
        options.enable_cpu_mem_arena = False
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])


def release_free_memory() -> bool:
    """Give the heap memory that is free back to the OS (glibc's ``malloc_trim``): session creation parses the
    model and copies weights, and glibc keeps the freed pages resident. Changes no setting; returns whether
    it ran (False where the C library has no ``malloc_trim``, e.g. musl or macOS)."""
    name = ctypes.util.find_library('c')
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, 'malloc_trim'):
        return False
    libc.malloc_trim(0)
    return True
