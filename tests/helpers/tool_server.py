"""Python tools run as fresh processes forked from one warm interpreter.

A tool's process spends ~6-8 s importing torch and OpenMMLab (mmpretrain.models alone pulls mmdet.models, and
with it seaborn, scipy and sklearn) before its own code runs; the test suite starts dozens. multiprocessing's
fork server imports them once, computes nothing (a process that has run an OpenMP region cannot fork safely:
the child's first parallel op hangs), and forks every tool run from there. Each run is still its own process:
its own globals, registries, seed, working directory, environment, exit code and output.
"""
import multiprocessing
import multiprocessing.forkserver
import os
import runpy
import sys
import tempfile
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

#: what every tool imports anyway, through petah_mm (registration) or the config's default scope
PRELOAD = ['petah_mm', 'mmengine.runner', 'mmpretrain.models', 'mmpretrain.datasets', 'mmdet.models',
           'mmdet.datasets', 'mmdet.evaluation', 'mmseg.models', 'mmseg.datasets', 'mmseg.evaluation',
           'matplotlib.pyplot']


class Finished(NamedTuple):
    """What ``subprocess.run(..., capture_output=True, text=True)`` would have returned."""
    returncode: int
    stdout: str
    stderr: str


#: read by the libraries when the fork server loads them: a child's own value would come too late
SERVER_ENV = ('OMP_NUM_THREADS', 'MPLBACKEND')
_server_env: dict = {}  # the running server's SERVER_ENV


def _context(env: Mapping[str, str]):
    """The fork server, started on first use with ``env``'s SERVER_ENV."""
    context = multiprocessing.get_context('forkserver')
    wanted = {key: env[key] for key in SERVER_ENV}
    if _server_env:
        if wanted != _server_env:
            raise ValueError(f'the tool server runs with {_server_env}, this run asks for {wanted}: run this tool '
                             'with helpers.run_process (a fresh interpreter) instead')
        return context
    context.set_forkserver_preload(PRELOAD)
    _server_env.update(wanted)
    saved = {key: os.environ.get(key) for key in SERVER_ENV}
    os.environ.update(wanted)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value
    return context


def _run_script(script: str, argv: Sequence[str], cwd: str, env: Mapping[str, str], out: str, err: str) -> None:
    """In the forked child: become ``python SCRIPT ARGV...`` started in ``cwd`` with ``env``."""
    import torch
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    for fd, path in ((1, out), (2, err)):
        file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(file, fd)
        os.close(file)
    python_path = [entry for entry in env.get('PYTHONPATH', '').split(os.pathsep) if entry]
    sys.path[:0] = [str(Path(script).resolve().parent), *python_path]
    sys.argv = [script, *argv]
    torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    runpy.run_path(script, run_name='__main__')


def run_forked(script, argv: Sequence, cwd, env: Mapping[str, str], timeout: float) -> Finished:
    """``python SCRIPT ARGV...`` as a process forked from the warm interpreter; its exit code and output.
    ``env`` must hold SERVER_ENV, with the same values on every call (the server keeps its first)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, 'stdout'), os.path.join(tmp, 'stderr')
        argv = [str(arg) for arg in argv]
        process = _context(env).Process(target=_run_script, args=(str(script), argv, str(cwd), dict(env), out, err))
        process.start()
        process.join(timeout)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise TimeoutError(f'{script} {list(argv)} ran past {timeout} s:\n{Path(err).read_text()[-3000:]}')
        return Finished(process.exitcode, Path(out).read_text(), Path(err).read_text())
