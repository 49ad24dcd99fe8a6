"""Wall-clock timing for the benchmark tools: medians, with CUDA work synchronised."""
import statistics
import time

import torch


def synchronize(device) -> None:
    """Wait for queued CUDA work on ``device``; nothing to wait for on the CPU."""
    if torch.device(device).type == 'cuda':
        torch.cuda.synchronize(device)


def elapsed_ms(fn, device='cpu') -> float:
    """Milliseconds one call of ``fn()`` takes, including the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return 1e3 * (time.perf_counter() - start)


def median_ms(fn, warmup: int, repeats: int, device='cpu') -> float:
    """Median of ``repeats`` timed calls of ``fn()`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(elapsed_ms(fn, device) for _ in range(repeats))
