"""Which machine a measurement ran on: a reader of a timing needs the CPU, and whether it computes bf16 natively.

On a CPU with native bf16 (``avx512_bf16`` or ``amx_bf16``) bf16 is the fast path, as on GPUs, and the bf16
rows show the adapters' own cost; without it bf16 GEMMs and convolutions are emulated, run 2-4x slower than
fp32, and hide that cost (benchmark.py's ``--op-breakdown`` shows it there).
"""
import platform
from pathlib import Path
from typing import Optional

import torch

NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def read_cpuinfo() -> str:
    """The text of /proc/cpuinfo, or '' where there is none."""
    path = Path('/proc/cpuinfo')
    return path.read_text() if path.exists() else ''


def cpu_model_and_flags(cpuinfo: str):
    """The CPU's model name and its set of flags, from the text of /proc/cpuinfo."""
    fields = dict(line.split(':', 1) for line in cpuinfo.splitlines() if ':' in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return fields.get('model name', platform.processor() or 'unknown CPU'), set(fields.get('flags', '').split())


def cpu_info(cpuinfo: str) -> dict:
    """The CPU's model name and its native-bf16 flags, from the text of /proc/cpuinfo."""
    cpu, flags = cpu_model_and_flags(cpuinfo)
    return dict(cpu=cpu, bf16_flags=[flag for flag in NATIVE_BF16_FLAGS if flag in flags])


def describe(device: Optional[str] = None) -> dict:
    """The CPU (and the GPU on CUDA) this process measures on; by default on the device mmengine's runner takes."""
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    machine = cpu_info(read_cpuinfo())
    machine.update(native_bf16=bool(machine['bf16_flags']), threads=torch.get_num_threads())
    if torch.device(device).type == 'cuda':
        machine['gpu'] = torch.cuda.get_device_name(device)
    return machine


def summary(machine: dict) -> str:
    bf16 = (f'native bf16 ({", ".join(machine["bf16_flags"])})' if machine['native_bf16'] else
            'no native bf16 (neither avx512_bf16 nor amx_bf16: bf16 rows run emulated)')
    gpu = f', GPU {machine["gpu"]}' if 'gpu' in machine else ''
    return f'CPU: {machine["cpu"]}, {machine["threads"]} threads, {bf16}{gpu}.'
