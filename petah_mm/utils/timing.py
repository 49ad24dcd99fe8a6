"""Wall-clock timing for the benchmark tools: medians, with CUDA work synchronised."""
import statistics
import time
from typing import Callable, Dict

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


def interleaved_medians_ms(fns: Dict[str, Callable], warmup: int, repeats: int, device='cpu') -> Dict[str, float]:
    """Median milliseconds of each ``fns[name]()``, timed in rounds that call each once, in an order that
    rotates per round: a machine's drift (on a shared VM, ±20 % over minutes) then hits all alike,
    where timing one function's repeats after the other's would put the drift into their ratio."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for repeat in range(repeats):
        for name in rotated(list(fns), repeat):
            times[name].append(elapsed_ms(fns[name], device))
    return {name: statistics.median(t) for name, t in times.items()}


def rotated(names: list, shift: int) -> list:
    """``names`` starting at ``shift`` (modulo their number): the order of a benchmark's round ``shift``."""
    shift %= len(names)
    return names[shift:] + names[:shift]
