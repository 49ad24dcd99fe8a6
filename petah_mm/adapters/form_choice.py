"""LoRA's unmerged inference form per CPU: measured once per machine, cached outside the checkout.

Unmerged inference runs each LoRA layer in the thin form op(x, W) + s·B(A(x)) or the fused form
op(x, W + ΔW) (:mod:`.lora`); both compute the same layer to rounding, so the choice changes speed
only. FLOPs pick the form by default (:meth:`LoRA.thin_form_is_cheaper`), but FLOPs miss what a
CPU's kernels make of a shape: with AVX-512 GEMMs, the FLOPs rule left unmerged PETAH-2 at 1.13x
the merged model at batch 1 on an AMD EPYC. :func:`tune_unmerged_forms` runs the model once on an
example input and, at each LoRA layer, times both forms on that layer's real input (a few rounds,
a few ms per layer signature, a total budget), then gives the layer a table
``{(positions bucket, compute dtype, layout): form}`` that its forward consults. A 1×1 convolution on
the CPU runs either form as matrix products by default; its measurement also times both forms as
oneDNN convolutions (``thin_conv``, ``fused_conv``), because which of MKL's GEMM and oneDNN's
convolution is faster depends on the CPU, the dtype and the shape: on an AMD EPYC with AVX-512 (Zen 5),
at batch 1, EF-L7's 1×1 convs as matrix products took 1.5-1.9x the time of their convolution forms in fp32,
0.7-0.9x in bf16 (docs/benchmarks.md).

Which rule applies:

* the measured choice: CPU eager forwards of a model that :func:`tune_unmerged_forms` was run on,
  for inputs in a (positions bucket, dtype, layout) it measured or found in the cache;
* the FLOPs rule everywhere else: models never tuned, CUDA, traces, ``torch.export`` and dynamo
  (their graphs do not depend on the machine), inputs of a bucket never measured, layer signatures
  left unmeasured once the budget was spent (counted in the returned summary), and
  ``PETAH_MM_UNMERGED_FORMS=flops``.

The cache holds one JSON file per machine key (CPU model name, the ISA flags that change GEMM
kernels, torch's CPU capability, torch's version, the thread count) in
``$PETAH_MM_CACHE/unmerged_forms/`` (default ``~/.cache/petah_mm``, where tools/install.sh caches).
It is written atomically; a damaged file is refused with its path and the advice to delete it,
never ignored; a missing one is measured. Tuning never runs inside a traced or compiled graph.
"""
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Optional

import torch

from petah_mm.utils import write_bytes_atomic
from petah_mm.utils.json_data import DataError, parse_json_data
from petah_mm.utils.timing import elapsed_ms, rotated
from .autocast import autocast_dtype

CACHE_FORMAT = 'petah_mm unmerged forms 2'
#: /proc/cpuinfo flags that change which GEMM and convolution kernels torch's CPU libraries run
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16')
FORMS = ('thin', 'fused')
#: the forms of a 1×1 convolution that runs as matrix products, as oneDNN convolutions instead
CONV_FORMS = ('thin_conv', 'fused_conv')
#: the environment variable that turns measuring off ('flops') or on ('measure', the default)
MODE_VARIABLE = 'PETAH_MM_UNMERGED_FORMS'
#: per layer signature: at least MIN_ROUNDS timed rounds of both forms, more while under PER_SIGNATURE_MS
MIN_ROUNDS, MAX_ROUNDS, PER_SIGNATURE_MS = 3, 15, 20.


def cache_dir() -> Path:
    """``$PETAH_MM_CACHE``, else ``$XDG_CACHE_HOME/petah_mm``, else ``~/.cache/petah_mm``: tools/install.sh's."""
    default = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'petah_mm'
    return Path(os.environ.get('PETAH_MM_CACHE', default))


def cpu_model_and_flags(cpuinfo: str):
    """The CPU's model name and its set of flags, from the text of /proc/cpuinfo."""
    fields = dict(line.split(':', 1) for line in cpuinfo.splitlines() if ':' in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    return fields.get('model name', platform.processor() or 'unknown CPU'), set(fields.get('flags', '').split())


def machine_key(cpuinfo: Optional[str] = None) -> dict:
    """What a measured choice holds for: this CPU model and ISA, torch's build and thread count."""
    if cpuinfo is None:
        path = Path('/proc/cpuinfo')
        cpuinfo = path.read_text() if path.exists() else ''
    cpu, flags = cpu_model_and_flags(cpuinfo)
    get_capability = getattr(torch.backends.cpu, 'get_cpu_capability', lambda: 'unknown')
    return dict(cpu=cpu, flags=[flag for flag in ISA_FLAGS if flag in flags], capability=get_capability(),
                torch=torch.__version__, threads=torch.get_num_threads())


def cache_path(key: dict) -> Path:
    """The key's file; the format is hashed in, so that files of another format are not this one's."""
    digest = hashlib.sha256(json.dumps(dict(key, format=CACHE_FORMAT), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / 'unmerged_forms' / f'{digest}.json'


def damaged(path: Path, why: str) -> ValueError:
    return ValueError(f'damaged cache of measured LoRA forms {str(path)!r}: {why}; delete the file and petah_mm '
                      'measures the forms again')


def valid_entry(entry) -> bool:
    """``{"form": f, "<form>_ms": ms, ...}`` with a positive time for each form of FORMS, or of FORMS and CONV_FORMS,
    and f one of them."""
    if not isinstance(entry, dict):
        return False
    forms = FORMS + CONV_FORMS if 'thin_conv_ms' in entry else FORMS
    times = [entry.get(f'{form}_ms') for form in forms]
    times_ok = all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in times)
    return times_ok and set(entry) == {'form', *(f'{f}_ms' for f in forms)} and entry['form'] in forms


def load_choices(path: Path, key: dict) -> dict:
    """The measured choices in ``path`` (``{}`` if there is none), each checked against its expected shape."""
    if not path.exists():
        return {}
    try:
        data = parse_json_data(path.read_text(encoding='utf-8'), str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, DataError) as e:
        raise damaged(path, f'not JSON data ({e})') from None
    if not isinstance(data, dict) or set(data) != {'format', 'machine', 'choices'}:
        raise damaged(path, "expected an object with the keys 'format', 'machine' and 'choices'")
    if data['format'] != CACHE_FORMAT:
        raise damaged(path, f'format {data["format"]!r}, expected {CACHE_FORMAT!r}')
    if data['machine'] != key:
        raise damaged(path, f'it was measured for {data["machine"]!r}, not for this machine {key!r}')
    choices = data['choices']
    if not isinstance(choices, dict):
        raise damaged(path, "'choices' is not an object")
    for signature, entry in choices.items():
        if not valid_entry(entry):
            raise damaged(path, f'choice {signature!r} is not {{"form": "thin" | "fused", "thin_ms": ms, '
                          f'"fused_ms": ms}} (a 1×1 conv\'s also with "thin_conv_ms" and "fused_conv_ms", its form '
                          f'one of the four) with positive times: {entry!r}')
    return choices


def save_choices(path: Path, key: dict, choices: dict) -> None:
    data = dict(format=CACHE_FORMAT, machine=key, choices=dict(sorted(choices.items())))
    write_bytes_atomic(path, (json.dumps(data, indent=1) + '\n').encode(), force=True)


def measuring_mode() -> str:
    mode = os.environ.get(MODE_VARIABLE, 'measure')
    if mode not in ('measure', 'flops'):
        raise ValueError(f'{MODE_VARIABLE}={mode!r}: expected measure (the default: time each LoRA layer\'s two '
                         'inference forms once per machine) or flops (choose them by FLOPs)')
    return mode


def tracing_or_compiling() -> bool:
    is_compiling = getattr(torch.compiler, 'is_compiling', lambda: False)
    return torch.jit.is_tracing() or is_compiling()


def form_key(x: torch.Tensor, positions: int) -> tuple:
    """What a measured choice is looked up by, per layer: cheap, as every unmerged forward asks it."""
    return positions.bit_length(), autocast_dtype(x.device.type) or x.dtype, x.is_contiguous()


def signature(layer, x: torch.Tensor) -> str:
    """The layer's kind, geometry and rank, and the form key of ``x``: what a measurement holds for."""
    bucket, dtype, contiguous = form_key(x, layer.output_positions(x))
    geometry = ('' if layer.weight.dim() == 2 else
                f' stride={layer.stride} padding={layer.padding} dilation={layer.dilation}')
    return (f'{type(layer).__name__} {tuple(layer.weight.shape)}{geometry} rank={layer.adapter.rank} '
            f'positions<2^{bucket} {str(dtype).replace("torch.", "")} {"contiguous" if contiguous else "strided"}')


def candidate_forms(layer, x: torch.Tensor) -> tuple:
    """FORMS, and CONV_FORMS where the layer would run them as matrix products."""
    return FORMS + CONV_FORMS if getattr(layer, 'runs_as_matmul', lambda x: False)(x) else FORMS


def time_forms(layer, x: torch.Tensor) -> dict:
    """Each candidate form on ``x``: rounds in rotating order, the fastest time of each (others' load only adds)."""
    forms, key = candidate_forms(layer, x), form_key(x, layer.output_positions(x))
    table = layer.adapter.measured_forms

    def call(form):
        table[key] = form  # a *_conv form: the layer's runs_as_matmul reads it and keeps the convolution
        return getattr(layer.adapter, f'{form.replace("_conv", "")}_forward')(x, layer)

    calls = {form: (lambda form=form: call(form)) for form in forms}
    try:
        for run in calls.values():
            run()
        times = {form: [] for form in forms}
        start = time.perf_counter()
        for round_index in range(MAX_ROUNDS):
            if round_index >= MIN_ROUNDS and 1e3 * (time.perf_counter() - start) > PER_SIGNATURE_MS:
                break
            for form in rotated(list(forms), round_index):
                times[form].append(elapsed_ms(calls[form]))
    finally:
        table.pop(key, None)
    best = {form: min(t) for form, t in times.items()}
    return dict(form=min(forms, key=best.get), **{f'{form}_ms': best[form] for form in forms})


def measured_layers(model: torch.nn.Module) -> dict:
    """The unmerged adapted layers whose factorization has a measured choice of inference form (LoRA's)."""
    from .layers import AdaptedLayerMixin  # the layers import the factorizations, which import this module
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedLayerMixin) and not m.merged
            and hasattr(m.adapter, 'measured_forms') and m.supports_branch}


@torch.no_grad()
def tune_unmerged_forms(model: torch.nn.Module, *inputs, budget_s: float = 2.) -> dict:
    """Give each LoRA layer of ``model`` its measured choice of inference form for inputs like ``inputs``.

    Runs ``model(*inputs)`` once without gradients, in the caller's autocast state (tune once per
    dtype the model will serve in). Layer signatures in this machine's cache take its choice; the
    others are timed and added to the cache until the timing has taken ``budget_s`` seconds (the
    forward itself not counted; the shape being timed then finishes: at least 3 rounds of both
    forms, so a loaded machine overshoots by one shape's rounds). Returns a summary:
    the rule used, the cache file and how many layers got a choice from a measurement now, from the
    cache, or none (the budget was spent: the FLOPs rule stays).
    """
    layers = measured_layers(model)
    device = next(iter(layers.values())).weight.device.type if layers else 'cpu'
    why_flops = ('no unmerged LoRA layer' if not layers else f'{MODE_VARIABLE}=flops' if measuring_mode() == 'flops'
                 else f'device {device}: measured on the CPU only' if device != 'cpu'
                 else 'inside a trace or compiled graph' if tracing_or_compiling() else None)
    if why_flops:
        return dict(rule='flops', why=why_flops)
    key = machine_key()
    path = cache_path(key)
    choices = load_choices(path, key)
    counts = dict(measured=0, cached=0, unmeasured=0)
    spent_s, added = [0.], set()

    def choose(layer, args):
        x = args[0]
        name = signature(layer, x)
        if name not in choices:
            if spent_s[0] > budget_s:
                counts['unmeasured'] += 1
                return
            start = time.perf_counter()
            choices[name] = time_forms(layer, x)
            spent_s[0] += time.perf_counter() - start
            added.add(name)
        counts['measured' if name in added else 'cached'] += 1
        layer.adapter.measured_forms[form_key(x, layer.output_positions(x))] = choices[name]['form']

    handles = [layer.register_forward_pre_hook(choose) for layer in layers.values()]
    try:
        model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    if added:
        save_choices(path, key, choices)
    return dict(rule='measured', cache=str(path), signatures_measured=len(added), measuring_s=spent_s[0], **counts)
