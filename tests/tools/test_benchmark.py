"""tools/analysis_tools/benchmark.py: every row measured, ratios consistent, for the EfficientFormer
trunk and for the backbone of a config (a tiny size: this checks the tool, not the numbers)."""
import argparse
import json
import sys

import pytest

from petah_mm.tools.analysis import benchmark as benchmark_tool
from petah_mm.utils import machine
from helpers import REPO, run_process

TOOL = REPO / 'tools' / 'analysis_tools' / 'benchmark.py'


def benchmark(tmp_path, *args):
    cmd = [sys.executable, str(TOOL), '--size', '64', '--batch', '2', '--warmup', '0', '--repeats', '1',
           '--methods', 'full', 'petah2', '--skip-ablations', '--out-dir', str(tmp_path), *args]
    proc = run_process(cmd, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / 'benchmark.json').read_text()), (tmp_path / 'benchmark.md').read_text()


def check_inference_rows(report, batches, precisions):
    rows = report['inference']
    suffix = {'fp32': '', 'bf16': ' (bf16)'}
    for batch in batches:
        for precision in precisions:
            name = f'{{}}, batch {batch}{suffix[precision]}'
            assert rows[name.format('plain')]['ratio'] == 1.0
            for n in (1, 2):
                merged, unmerged = rows[name.format(f'petah{n} merged')], rows[name.format(f'petah{n} unmerged')]
                assert merged['batch'] == unmerged['batch'] == batch
                assert unmerged['ratio_to_merged'] == pytest.approx(unmerged['ms'] / merged['ms'])
    assert len(rows) == 5 * len(batches) * len(precisions)


@pytest.mark.slow
def test_trunk_with_bf16_rows_and_two_inference_batches(tmp_path):
    """One round, and the FLOPs rule for the unmerged forms: bf16 is emulated on CPUs without native bf16,
    where tuning the forms and a second round would double the test's time (test_benchmark_forms measures
    forms; test_rounds_rotate_and_keep_each_rows_fastest the rounds)."""
    report, table = benchmark(tmp_path, '--arch', 'l1', '--amp', '--inference-batches', '1', '2',
                              '--unmerged-forms', 'flops', '--op-breakdown')
    check_inference_rows(report, [1, 2], ['fp32', 'bf16'])
    training = report['training']
    assert set(training) == {'full', 'petah2', 'full (bf16)', 'petah2 (bf16)'}
    for row in training.values():  # a fresh worker per method and round
        assert len(row['ms_by_round']) == 1 and row['ms'] == row['ms_by_round'][0] > 0
    assert training['full']['time_ratio'] == training['full (bf16)']['memory_ratio'] == 1.0
    assert 0 < training['petah2 (bf16)']['time_ratio'] and 0 < training['petah2 (bf16)']['memory_ratio']
    sizes = report['sizes']
    assert sizes['petah2']['trainable'] < sizes['full']['trainable']
    assert sizes['petah2']['gflops_merged'] < sizes['petah2']['gflops_unmerged']
    assert '| petah2 unmerged, batch 1 (bf16) |' in table and report['switch_ms'] > 0
    assert f'CPU: {report["machine"]["cpu"]}' in table
    breakdown = report['op_breakdown']
    assert breakdown['precision'] == 'bf16'
    for method in ('full', 'petah2'):  # a bf16 step runs convolutions, and the optimizer's ops
        ops = {row['op'] for row in breakdown[method]}
        assert any('conv' in op for op in ops) and all(row['self_ms'] >= 0 for row in breakdown[method]), ops
    assert 'Op breakdown of one bf16 training step' in table


def test_inference_only_measures_no_training(tmp_path):
    """--inference-only: the inference rows of one run, and nothing that trains (what the README's ONNX
    Runtime table is made from)."""
    report, table = benchmark(tmp_path, '--arch', 'l1', '--inference-only', '--inference-batches', '1', '2')
    check_inference_rows(report, [1, 2], ['fp32'])
    assert not {'training', 'sizes', 'switch_ms'} & set(report), sorted(report)
    assert 'train step' not in table and 'training' not in table and f'CPU: {report["machine"]["cpu"]}' in table


def test_ablations_are_all_by_default_none_when_skipped_or_those_named(capsys):
    parse = benchmark_tool.cli.parse_args
    assert parse([]).ablations == ['batchnorm', 'branch', 'fused', 'mlp', 'pooling']
    assert parse(['--config', 'any.py']).ablations == ['batchnorm', 'branch', 'fused', 'mlp']  # maybe no pooling
    assert parse(['--skip-ablations']).ablations == [] and parse(['--ablations', 'pooling']).ablations == ['pooling']
    with pytest.raises(SystemExit):
        parse(['--skip-ablations', '--ablations', 'mlp'])
    assert '--skip-ablations and --ablations' in capsys.readouterr().err


def test_inference_only_refuses_the_op_breakdown(capsys):
    with pytest.raises(SystemExit):
        benchmark_tool.cli.parse_args(['--inference-only', '--op-breakdown'])
    assert '--op-breakdown profiles training steps' in capsys.readouterr().err


def test_config_backbone_loads_no_weights(tmp_path):
    """--config benchmarks that config's model.backbone without its pretrained weights: FastViT's timm
    ``pretrained=True`` would try a download at build time, which this machine cannot do."""
    config = REPO / 'configs/cascade_rcnn/cascade-mask-rcnn_fastvit-sa12-petah2_fpn_1x_coco.py'
    report, _ = benchmark(tmp_path, '--config', str(config), '--inference-only')  # builds what training builds
    check_inference_rows(report, [2], ['fp32'])


def test_training_peak_is_the_workers_own(tmp_path):
    """A worker started by a parent holding 2 GB reports its own peak: ``ru_maxrss`` would report the
    parent's, kept across fork and exec (this inflated PETAH-2's peak behind the benchmark's inference models)."""
    parent = f'''
import json, subprocess, sys, torch
ballast = torch.ones(2**29)  # 2 GiB, touched
cmd = [sys.executable, {str(TOOL)!r}, '--worker', '--method', 'petah2', '--arch', 'l1', '--size', '64', '--batch', '2',
       '--warmup', '0', '--repeats', '1']
out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
print(json.loads(out.strip().splitlines()[-1])['peak_gb'], ballast.sum().item())
'''
    proc = run_process([sys.executable, '-c', parent], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak_gb, ballast = map(float, proc.stdout.split())
    assert ballast == 2**29 and 0.1 < peak_gb < 1.5, peak_gb


def test_interleaved_timing_cancels_a_machines_drift(monkeypatch):
    """Two functions, one twice as slow as the other, on a machine that slows down by 5 % per call:
    timed in rotating rounds their median ratio stays 2 within the drift of one round, where all of
    one's repeats before the other's would read far more."""
    from petah_mm.utils import timing
    clock, calls = [0.], []

    def work(name, cost):
        def run():
            calls.append(name)
            clock[0] += cost * 1.05 ** len(calls)
        return run

    monkeypatch.setattr(timing.time, 'perf_counter', lambda: clock[0])
    medians = timing.interleaved_medians_ms(dict(fast=work('fast', 1.), slow=work('slow', 2.)), warmup=1, repeats=20)
    assert calls[:2] == ['fast', 'slow'] and calls[2:6] == ['fast', 'slow', 'slow', 'fast']  # warm-up, then rotation
    assert len(calls) == 2 * (1 + 20)
    assert 1.9 < medians['slow'] / medians['fast'] < 2.1
    calls.clear()
    sequential = timing.median_ms(work('slow', 2.), 1, 20) / timing.median_ms(work('fast', 1.), 1, 20)
    assert sequential < 1.5  # the drift: the later-timed function read cheaper


def test_amp_rows_use_the_dtype_train_py_amp_trains_with():
    """bf16 on the CPU (BF16OptimWrapper), fp16 on CUDA (AmpOptimWrapper): bf16 autocast would also raise on
    GPUs without bf16."""
    tool = benchmark_tool
    assert tool.precisions(argparse.Namespace(amp=True, device='cpu')) == ['fp32', 'bf16']
    assert tool.precisions(argparse.Namespace(amp=True, device='cuda:1')) == ['fp32', 'fp16']
    assert tool.precisions(argparse.Namespace(amp=False, device='cuda')) == ['fp32']
    assert tool.row_name('petah2', 'fp16') == 'petah2 (fp16)' and tool.row_name('petah2', 'fp32') == 'petah2'


def test_an_unknown_device_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        benchmark_tool.parse_args(['--device', 'mps'])
    assert "--device mps: expected 'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err


def test_a_training_row_keeps_its_fastest_round():
    """A burst of another tenant's load slowed one round 2.5×: the row is the undisturbed time; memory,
    which that load does not change, is the median."""
    rounds = [dict(ms=3375., peak_gb=1.26), dict(ms=8408., peak_gb=1.27), dict(ms=3685., peak_gb=1.25)]
    row = benchmark_tool.summarise_rounds(rounds)
    assert row == dict(ms=3375., peak_gb=1.26, ms_by_round=[3375., 8408., 3685.])


def test_rounds_rotate_and_keep_each_rows_fastest(monkeypatch):
    """--rounds 3 starts a worker per method, precision and round, each round in the next rotation of the
    methods, and each row keeps its fastest round (the workers are stubbed: their step time is the call's index)."""
    from petah_mm.tools.analysis.benchmark import training
    calls = []

    def worker(command, **kwargs):
        calls.append(command[command.index('--method') + 1])
        peak = 2. if calls[-1] == 'full' else 1.
        return argparse.Namespace(returncode=0, stdout=json.dumps(dict(ms=float(len(calls)), peak_gb=peak)))

    monkeypatch.setattr(training.subprocess, 'run', worker)
    args = argparse.Namespace(methods=['full', 'petah2', 'frozen'], ablations=[], peft=False, amp=False,
                              device='cpu', rounds=3, op_breakdown=False, arch='l1', size=64, batch=2, warmup=0,
                              repeats=1, config=None)
    rows, profiles = training.training(args)
    assert calls == ['full', 'petah2', 'frozen', 'petah2', 'frozen', 'full', 'frozen', 'full', 'petah2']
    assert rows['full']['ms_by_round'] == [1., 6., 8.] and rows['full']['ms'] == 1.
    assert rows['frozen']['ms_by_round'] == [3., 5., 7.] and rows['frozen']['ms'] == 3.
    assert rows['petah2']['time_ratio'] == 2. and rows['petah2']['memory_ratio'] == .5 and profiles == {}


def test_the_report_says_whether_the_cpu_has_native_bf16():
    """A reader must know which regime the bf16 rows show: native bf16 is the fast path, emulated bf16 hides
    the adapters' cost."""
    epyc = 'processor\t: 0\nmodel name\t: AMD EPYC 9454\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse4_2\n'
    old_xeon = 'processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8259CL\nflags\t\t: fpu avx2 avx512f\n'
    assert machine.cpu_info(epyc) == dict(cpu='AMD EPYC 9454', bf16_flags=['avx512_bf16'])
    assert machine.cpu_info(old_xeon) == dict(cpu='Intel(R) Xeon(R) Platinum 8259CL', bf16_flags=[])
    line = machine.summary(dict(machine.cpu_info(old_xeon), native_bf16=False, threads=2))
    assert line.startswith('CPU: Intel(R) Xeon(R) Platinum 8259CL, 2 threads, no native bf16'), line
    assert 'native bf16 (avx512_bf16)' in machine.summary(dict(machine.cpu_info(epyc), native_bf16=True, threads=2))
