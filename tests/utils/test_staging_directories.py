"""A directory writer's staging directory carries its host and pid, and the next writer removes those of dead
writers, as temporary files are (issue 31, failure 9: a SIGKILL during ``export_task_package`` left
``.pkg.XXXX/`` beside the package forever)."""
import os
import signal
import subprocess
import sys

import pytest

from petah_mm.utils.fileio import host_tag, staging_directory, stale_staging_directories
from helpers import REPO

#: a child that exports the toy classification task and SIGKILLs itself while fsyncing task.safetensors,
#: once the adapter file is in the staging directory (argv: backbone checkpoint, package directory)
EXPORT_AND_DIE = '''
import os, signal, sys
from helpers.task_models import trained_model
from petah_mm.deploy import export_task_package

cfg, model = trained_model('cls', sys.argv[1])
fsync = os.fsync

def fsync_then_die(fd):
    name = os.readlink(f'/proc/self/fd/{fd}')
    if '.staging/' in name and os.path.basename(name).startswith('.task.safetensors.'):
        os.kill(os.getpid(), signal.SIGKILL)
    fsync(fd)

os.fsync = fsync_then_die
export_task_package(model, cfg, sys.argv[2])
'''


def exited_pid() -> int:
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    """The pid of a running process of this host (a writer still at work)."""
    proc = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_only_dead_writers_staging_directories_are_removed(tmp_path, live_pid):
    target = tmp_path / 'pkg'
    dead = tmp_path / f'.pkg.{host_tag()}.{exited_pid()}.abc123.staging'
    live = tmp_path / f'.pkg.{host_tag()}.{live_pid}.def456.staging'
    other_host = tmp_path / f'.pkg.not-{host_tag()}.{exited_pid()}.ghi789.staging'
    other_target = tmp_path / f'.pkg.x.{host_tag()}.{exited_pid()}.jkl012.staging'
    dead_file = tmp_path / f'.pkg.{host_tag()}.{exited_pid()}.mno345.tmp'  # a temporary file: atomic_write's
    for path in (dead, live, other_host, other_target):
        (path / 'sub').mkdir(parents=True)
        (path / 'sub' / 'adapter.safetensors').write_bytes(b'partial')
    dead_file.write_bytes(b'partial')
    (tmp_path / 'outside').mkdir()
    link = tmp_path / f'.pkg.{host_tag()}.{exited_pid()}.pqr678.staging'
    link.symlink_to(tmp_path / 'outside')
    assert stale_staging_directories(target) == [dead]
    mine = staging_directory(target)
    assert mine.parent == tmp_path and mine.name.startswith(f'.pkg.{host_tag()}.{os.getpid()}.')
    assert mine.name.endswith('.staging') and not any(mine.iterdir())
    assert not dead.exists()
    assert all(p.exists() for p in (live, other_host, other_target, dead_file, link, tmp_path / 'outside'))


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='the child finds its file by /proc/self/fd')
def test_a_killed_export_leaves_a_staging_directory_that_the_next_export_removes(tmp_path, toy_backbone, live_pid):
    from petah_mm.deploy import export_task_package
    from helpers.task_models import trained_model
    out = tmp_path / 'pkg'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / 'tests'), str(REPO)]))
    proc = subprocess.run([sys.executable, '-c', EXPORT_AND_DIE, str(toy_backbone), str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    left = list(tmp_path.glob(f'.pkg.{host_tag()}.*.staging'))
    assert len(left) == 1 and not out.exists()
    temporary, adapter = sorted(p.name for p in left[0].iterdir())  # killed while writing the task file
    assert adapter == 'adapter.safetensors'
    assert temporary.startswith('.task.safetensors.') and temporary.endswith('.tmp')
    live = tmp_path / f'.pkg.{host_tag()}.{live_pid}.abc123.staging'  # a writer still at work
    live.mkdir()
    cfg, model = trained_model('cls', toy_backbone)
    export_task_package(model, cfg, out)
    assert not left[0].exists() and live.exists()
    assert sorted(p.name for p in out.iterdir()) == ['adapter.safetensors', 'config.json', 'task.safetensors']
