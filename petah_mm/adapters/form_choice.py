"""LoRA's unmerged inference form per CPU: measured once per machine, cached outside the checkout.

Unmerged inference runs each LoRA layer in the thin form op(x, W) + s·B(A(x)) or the fused form
op(x, W + ΔW) (:mod:`.lora`); both compute the same layer to rounding, so the choice changes speed
only. FLOPs pick the form by default (:meth:`LoRA.inference_form`), but FLOPs miss what a
CPU's kernels make of a shape: with AVX-512 GEMMs, the FLOPs rule left unmerged PETAH-2 at 1.13x
the merged model at batch 1 on an AMD EPYC. :func:`tune_unmerged_forms` runs the model on an
example input and times each LoRA layer's forms where it runs, inside whole forwards (a few rounds,
a budget), then gives the layer a table ``{(positions bucket, compute dtype, layout): form}`` that its
forward consults. A 1×1 convolution on the CPU runs either form as matrix products by default; its
measurement also times both forms with W applied by oneDNN's convolution (``thin_conv``,
``fused_conv``), because which of MKL's GEMM and oneDNN's convolution is faster depends on the CPU,
the dtype and the shape: on an AMD EPYC with AVX-512 (Zen 5), at batch 1, EF-L7's 1×1 convs as matrix
products took 1.3-1.8x the time of their convolution forms in fp32, 0.8-1.0x in bf16 (docs/benchmarks.md).

Which rule applies:

* the measured choice: CPU eager forwards of a model that :func:`tune_unmerged_forms` was run on,
  for inputs in a (positions bucket, dtype, layout) it measured or found in the cache;
* the FLOPs rule everywhere else: models never tuned, CUDA, traces, ``torch.export`` and dynamo
  (their graphs do not depend on the machine), inputs of a bucket never measured, and
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
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import torch

from petah_mm.utils import write_bytes_atomic
from petah_mm.utils.json_data import DataError, parse_json_data
from petah_mm.utils.machine import cpu_model_and_flags, read_cpuinfo
from petah_mm.utils.timing import rotated
from .autocast import autocast_dtype

#: raised when the file's layout or what its timings hold for changes, so that older files are measured again
#: (3: forms timed inside the model; 4: EfficientFormer's pooling, which runs after many LoRA layers, changed,
#: and a layer's span ends at the next LoRA layer even where that layer's choice was cached)
CACHE_FORMAT = 'petah_mm unmerged forms 4'
#: /proc/cpuinfo flags that change which GEMM and convolution kernels torch's CPU libraries run
ISA_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx512_bf16', 'amx_tile', 'amx_bf16')
FORMS = ('thin', 'fused')
#: the forms of a 1×1 convolution that runs as matrix products, as oneDNN convolutions instead
CONV_FORMS = ('thin_conv', 'fused_conv')
#: the environment variable that turns measuring off ('flops') or on ('measure', the default)
MODE_VARIABLE = 'PETAH_MM_UNMERGED_FORMS'
#: measuring rounds of whole forwards, each form once per round: at least MIN_ROUNDS, more while under the budget
MIN_ROUNDS, MAX_ROUNDS = 3, 15


def cache_dir() -> Path:
    """``$PETAH_MM_CACHE``, else ``$XDG_CACHE_HOME/petah_mm``, else ``~/.cache/petah_mm``: tools/install.sh's."""
    default = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'petah_mm'
    return Path(os.environ.get('PETAH_MM_CACHE', default))


def machine_key(cpuinfo: Optional[str] = None) -> dict:
    """What a measured choice holds for: this CPU model and ISA, torch's build and thread count."""
    cpu, flags = cpu_model_and_flags(read_cpuinfo() if cpuinfo is None else cpuinfo)
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


def measured_layers(model: torch.nn.Module) -> dict:
    """The unmerged adapted layers whose factorization has a measured choice of inference form (LoRA's)."""
    from .layers import AdaptedLayerMixin  # the layers import the factorizations, which import this module
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedLayerMixin) and not m.merged
            and hasattr(m.adapter, 'measured_forms') and m.supports_branch}


@contextmanager
def hooked(layers, pre):
    """A forward pre-hook on every layer for the duration of the block."""
    handles = [layer.register_forward_pre_hook(pre) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def layer_inputs(model: torch.nn.Module, layers, inputs) -> dict:
    """One forward: ``{(layer, form key): (signature, candidate forms)}`` for each kind of input each layer gets."""
    seen = {}

    def record(layer, args):
        x = args[0]
        key = form_key(x, layer.output_positions(x))
        if (layer, key) not in seen:
            seen[layer, key] = signature(layer, x), candidate_forms(layer, x)

    with hooked(layers, record):
        model(*inputs)
    return seen


def form_run(form: str, candidates: tuple) -> str:
    """The form a layer runs in a measuring round of ``form``: its matrix-product twin where it has no conv forms."""
    return form if form in candidates else form.replace('_conv', '')


def measure_in_place(model: torch.nn.Module, inputs, pending: dict, budget_s: float) -> dict:
    """The measured choice ``{signature: {"form": f, "<form>_ms": ms, ...}}`` for the ``pending`` layers
    ``{(layer, form key): (signature, candidates)}``, timed where they run (:func:`fastest_in_place`). Per signature,
    each form's time is the sum over its layers of their fastest round, reported per layer."""
    fastest = fastest_in_place(model, inputs, pending, budget_s)
    totals, members = {}, {}
    for (layer, key), (name, candidates) in pending.items():
        members[name] = members.get(name, 0) + 1
        times = totals.setdefault(name, {})
        for form in candidates:
            if (layer, key, form) not in fastest:
                raise RuntimeError(f'tuning the unmerged LoRA forms: a {name} ran in the first forward but not in '
                                   f'the measuring forward of form {form!r}; the forward must call the same layers '
                                   f'each time on the same inputs. Set {MODE_VARIABLE}=flops to keep the FLOPs rule')
            times[form] = times.get(form, 0.) + fastest[layer, key, form]
    return {name: dict(form=min(times, key=times.get), **{f'{form}_ms': ms / members[name]
                                                          for form, ms in times.items()})
            for name, times in totals.items()}


def fastest_in_place(model: torch.nn.Module, inputs, pending: dict, budget_s: float) -> dict:
    """``{(layer, form key, form): ms}``, each pending layer's fastest time in each form (others' load only adds),
    from rounds of whole forwards, each running every pending layer in one form (the forms rotate from round to
    round). A layer's time runs from its start to the next start of a layer of :func:`measured_layers`, pending or
    cached (or the forward's end): what its form costs the ops after it counts too. Building W + ΔW writes a
    kernel-sized tensor per call, which evicts the activations the next norm, activation or pooling reads; a layer
    timed alone, in a loop on its own input, sees neither that nor its kernel streaming in from memory, and can rank
    the forms otherwise than the model does.
    At least MIN_ROUNDS rounds, more while under ``budget_s``. The layers' tables hold what they held before,
    whatever happens."""
    forms = tuple(f for f in FORMS + CONV_FORMS if any(f in candidates for _, candidates in pending.values()))
    fastest, running, open_span = {}, {}, []

    def close_span():
        if open_span:
            timed, began = open_span.pop()
            ms = 1e3 * (time.perf_counter() - began)
            fastest[timed] = min(fastest.get(timed, ms), ms)

    def start(layer, args):
        close_span()
        x = args[0]
        entry = (layer, form_key(x, layer.output_positions(x)))
        if entry in pending:
            open_span.append(((*entry, running[entry]), time.perf_counter()))

    saved = {entry: entry[0].adapter.measured_forms.get(entry[1]) for entry in pending}
    begin = time.perf_counter()
    try:
        with hooked(measured_layers(model).values(), start):
            for round_index in range(MAX_ROUNDS):
                if round_index >= MIN_ROUNDS and time.perf_counter() - begin > budget_s:
                    break
                for form in rotated(list(forms), round_index):
                    for (layer, key), (_, candidates) in pending.items():
                        running[layer, key] = layer.adapter.measured_forms[key] = form_run(form, candidates)
                    model(*inputs)
                    close_span()
    finally:
        for (layer, key), form in saved.items():
            layer.adapter.measured_forms.pop(key, None)
            if form is not None:
                layer.adapter.measured_forms[key] = form
    return fastest


@torch.no_grad()
def tune_unmerged_forms(model: torch.nn.Module, *inputs, budget_s: float = 2.) -> dict:
    """Give each LoRA layer of ``model`` its measured choice of inference form for inputs like ``inputs``.

    Runs ``model(*inputs)`` without gradients, in the caller's autocast state (tune once per dtype the
    model will serve in): once to see what each layer gets, then, for the layer signatures not in this
    machine's cache, measuring rounds of whole forwards (:func:`measure_in_place`: at least MIN_ROUNDS,
    more while under ``budget_s`` seconds), whose choices are added to the cache. Returns a summary: the
    rule used, the cache file, how many layers got a choice from a measurement now or from the cache.
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
    seen = layer_inputs(model, layers.values(), inputs)
    pending = {entry: found for entry, found in seen.items() if found[0] not in choices}
    for (layer, form_key_), (name, _) in seen.items():  # the cached choices first: the measuring runs among them
        if name in choices:
            layer.adapter.measured_forms[form_key_] = choices[name]['form']
    start = time.perf_counter()
    measured = measure_in_place(model, inputs, pending, budget_s) if pending else {}
    measuring_s = time.perf_counter() - start
    if measured:
        choices.update(measured)
        save_choices(path, key, choices)
        for (layer, form_key_), (name, _) in pending.items():
            layer.adapter.measured_forms[form_key_] = choices[name]['form']
    return dict(rule='measured', cache=str(path), signatures_measured=len(measured), measuring_s=measuring_s,
                measured=len(pending), cached=len(seen) - len(pending))


def summary_text(summary: dict) -> str:
    """One line for a :func:`tune_unmerged_forms` summary, as the tools print it."""
    if summary['rule'] == 'flops':
        return f'FLOPs rule ({summary["why"]})'
    return (f'measured forms: {summary["measured"]} layers from {summary["signatures_measured"]} shapes timed now in '
            f'the model ({summary["measuring_s"]:.2f} s), {summary["cached"]} from the cache; {summary["cache"]}')
