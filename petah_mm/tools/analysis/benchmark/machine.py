"""Which machine a benchmark ran on: a reader needs the CPU, and whether it computes bf16 natively.

On a CPU with native bf16 (``avx512_bf16`` or ``amx_bf16``) bf16 is the fast path, as on GPUs, and the bf16
rows show the adapters' own cost; without it bf16 GEMMs and convolutions are emulated, run 2-4x slower than
fp32, and hide that cost (the op breakdown of ``--op-breakdown`` shows it there).
"""
from pathlib import Path

import torch

from petah_mm.adapters.form_choice import cpu_model_and_flags

NATIVE_BF16_FLAGS = ('avx512_bf16', 'amx_bf16')


def cpu_info(cpuinfo: str) -> dict:
    """The CPU's model name and its native-bf16 flags, from the text of /proc/cpuinfo."""
    cpu, flags = cpu_model_and_flags(cpuinfo)
    return dict(cpu=cpu, bf16_flags=[flag for flag in NATIVE_BF16_FLAGS if flag in flags])


def describe(device: str) -> dict:
    """The CPU (and the GPU on CUDA) this benchmark runs on."""
    cpuinfo = Path('/proc/cpuinfo')
    machine = cpu_info(cpuinfo.read_text() if cpuinfo.exists() else '')
    machine.update(native_bf16=bool(machine['bf16_flags']), threads=torch.get_num_threads())
    if torch.device(device).type == 'cuda':
        machine['gpu'] = torch.cuda.get_device_name(device)
    return machine


def summary(machine: dict) -> str:
    bf16 = (f'native bf16 ({", ".join(machine["bf16_flags"])})' if machine['native_bf16'] else
            'no native bf16 (neither avx512_bf16 nor amx_bf16: bf16 rows run emulated)')
    gpu = f', GPU {machine["gpu"]}' if 'gpu' in machine else ''
    return f'CPU: {machine["cpu"]}, {machine["threads"]} threads, {bf16}{gpu}.'
