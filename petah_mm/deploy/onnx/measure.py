"""Resident memory and batch-1 latency of ONNX Runtime sessions, each layout in a fresh process.

``python -m petah_mm.deploy.onnx.measure LAYOUT GRAPH... [--no-arena] [--trim]`` opens sessions for the
graphs, runs each task once, and prints JSON: the resident memory (VmRSS) the sessions add to the
process after importing onnxruntime (``sessions_mb``), the same after glibc's ``malloc_trim`` has given
the free heap back to the OS (``trimmed_mb``, with ``--trim``), the process's peak (VmHWM) over the
same base (``peak_added_mb``), and the
median batch-1 latency per task. ``--no-arena`` opens the sessions without ORT's CPU memory arena.
Layouts:

* ``merged``: one session per graph (each a task's merged backbone and head);
* ``shared``: ``GRAPH...`` = the backbone graph, then one head graph per task; one backbone session;
* ``sessions`` / ``sessions-shared-init``: one session of the backbone graph per task, the second
  with the frozen weights handed to every session once via ``SessionOptions.add_initializer``
  (and ORT's weight prepacking off, which would otherwise copy them per session).
"""
import argparse
import json
import statistics
import time
from typing import Dict, List

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from .runtime import release_free_memory

LAYOUTS = ('merged', 'shared', 'sessions', 'sessions-shared-init')


def rss_mb(field: str = 'VmRSS') -> float:
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith(f'{field}:'):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'no {field} in /proc/self/status (Linux only)')


def zero_feed(session: ort.InferenceSession) -> Dict[str, np.ndarray]:
    """Zeros for every input; a symbolic (batch) dimension is 1."""
    return {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in session.get_inputs()}


def median_ms(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def shared_initializers(path: str) -> Dict[str, ort.OrtValue]:
    return {t.name: ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(t))
            for t in onnx.load(path).graph.initializer}


def measure(layout: str, graphs: List[str], tasks: int, repeats: int, threads: int, arena: bool = True,
            trim: bool = False) -> dict:
    base = rss_mb()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_cpu_mem_arena = arena

    def session(path, options=opts):
        return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])

    if layout == 'merged':
        runs = [(lambda s, f: lambda: s.run(None, f))(s, zero_feed(s)) for s in map(session, graphs)]
    elif layout == 'shared':
        backbone, heads = session(graphs[0]), [session(g) for g in graphs[1:]]
        feed = zero_feed(backbone)

        def task_run(head):
            names = [i.name for i in head.get_inputs()]
            return lambda: head.run(None, dict(zip(names, backbone.run(None, feed))))

        runs = [task_run(h) for h in heads]
    else:
        if layout == 'sessions-shared-init':
            shared = shared_initializers(graphs[0])  # kept alive: the sessions use these buffers
            opts.add_session_config_entry('session.disable_prepacking', '1')
            for name, value in shared.items():
                opts.add_initializer(name, value)
        sessions = [session(graphs[0]) for _ in range(tasks)]
        runs = [(lambda s, f: lambda: s.run(None, f))(s, zero_feed(s)) for s in sessions]
    for run in runs:
        run()
    loaded = rss_mb()
    result = dict(layout=layout, arena=arena, rss_import_mb=round(base, 1), rss_mb=round(loaded, 1),
                  sessions_mb=round(loaded - base, 1))
    if trim:
        if not release_free_memory():
            raise RuntimeError('--trim needs glibc\'s malloc_trim, which this C library lacks')
        result['trimmed_mb'] = round(rss_mb() - base, 1)
    latency = [median_ms(run, repeats) for run in runs]
    if trim:
        release_free_memory()
        result['trimmed_after_timing_mb'] = round(rss_mb() - base, 1)
    return dict(result, peak_added_mb=round(rss_mb('VmHWM') - base, 1), latency_ms=[round(t, 2) for t in latency])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('layout', choices=LAYOUTS)
    parser.add_argument('graphs', nargs='+')
    parser.add_argument('--tasks', type=int, default=3, help='sessions of the backbone graph (sessions layouts)')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--no-arena', action='store_true', help="sessions without ORT's CPU memory arena")
    parser.add_argument('--trim', action='store_true', help='also measure after malloc_trim (glibc)')
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.layout, args.graphs, args.tasks, args.repeats, args.threads, not args.no_arena,
                             args.trim)))


if __name__ == '__main__':
    main()
