"""Race-free writers: the refusal to overwrite and the write are one atomic step, and each writer's
temporary file is its own (issue 23, item 5)."""
import errno
import json
import os
import subprocess
import sys

import pytest
import torch

from petah_mm.utils import atomic_write, write_bytes_atomic
from petah_mm.utils.fileio import check_output_path, host_tag, stale_temp_files
from petah_mm.utils.tensor_file import read_tensor_file
from helpers import REPO

RACER = REPO / 'tests' / 'helpers' / 'race_writer.py'


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, '-c', 'pass'])
    proc.wait()
    return proc.pid


def winner_of(work, step):
    """What the file of ``step`` holds: the tag of the writer whose content it is, checked complete."""
    target = work / step
    if step in ('bytes', 'package'):
        data = (target / 'config.json' if step == 'package' else target).read_bytes()
        tag = data.split(b' by ')[1][:1].decode()
        assert data == f'{step} by {tag}\n'.encode() * 50_000, f'{target} is not one writer\'s complete content'
        return tag
    if step == 'checkpoint':
        saved = torch.load(target, weights_only=True)
        tag = saved['writer']
    else:
        tensors, meta = read_tensor_file(target, kind='adapter')  # checks the sha256 of the whole content
        saved, tag = tensors, meta['writer']
    assert torch.equal(saved['w'], torch.full((256, 256), float(ord(tag)))), f'{target} mixes the two writers'
    return tag


@pytest.mark.skipif(os.name != 'posix', reason='the writers identify dead processes by pid on POSIX')
def test_two_processes_writing_one_path_exactly_one_wins(tmp_path):
    """Two processes write the same targets at once without force, each sleeping between its write and the publish
    (every petah_mm writer: plain bytes, an adapter file, a .pth, a package directory). Then ``a`` sleeps long
    while ``b`` starts once ``a``'s temporary file exists: ``b``'s start must not delete it."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, RACER, tag, tmp_path], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for tag in 'ab']
    outputs = [proc.communicate(timeout=240) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
    results = {}
    for out, _ in outputs:
        for line in out.splitlines():
            record = json.loads(line)
            results.setdefault(record['step'], {})[record['tag']] = record
    assert len(results) == 5, results
    for step, by_tag in results.items():
        outcomes = sorted(r['result'] for r in by_tag.values())
        assert outcomes == ['FileExistsError', 'ok'], f'{step}: {by_tag}'
        winner = next(tag for tag, r in by_tag.items() if r['result'] == 'ok')
        assert winner_of(tmp_path, step) == winner, f'{step}: the file is not the winner\'s ({winner})'
    assert results['staggered']['b']['result'] == 'ok', 'the fast writer published first'
    assert not list(tmp_path.glob('.*.tmp')), 'a writer left its temporary file behind'


def test_only_dead_writers_temp_files_are_cleaned(tmp_path):
    target = tmp_path / 'adapter.safetensors'
    dead = tmp_path / f'.adapter.safetensors.{host_tag()}.{dead_pid()}.abc123.tmp'
    live = tmp_path / f'.adapter.safetensors.{host_tag()}.{os.getpid()}.def456.tmp'  # another thread's
    other_host = tmp_path / f'.adapter.safetensors.not-{host_tag()}.1.ghi789.tmp'
    unknown = tmp_path / '.adapter.safetensors.jkl012.tmp'  # no owner recorded: left alone
    other_target = tmp_path / f'.adapter.safetensors.x.{host_tag()}.{dead_pid()}.abc123.tmp'
    for path in (dead, live, other_host, unknown, other_target):
        path.write_bytes(b'partial')
    assert stale_temp_files(target) == [dead]
    with atomic_write(target, force=False) as f:
        f.write(b'data')
    assert target.read_bytes() == b'data'
    assert not dead.exists() and all(p.exists() for p in (live, other_host, unknown, other_target))


def test_exclusive_publish_without_hard_links(tmp_path, monkeypatch):
    """A filesystem without hard links (vfat, some network mounts): the name is claimed with O_EXCL instead."""
    def no_link(src, dst):
        raise OSError(errno.EPERM, 'Operation not permitted')

    monkeypatch.setattr(os, 'link', no_link)
    assert write_bytes_atomic(tmp_path / 'x.pth', b'first') == 5
    with pytest.raises(FileExistsError, match='force'):
        with atomic_write(tmp_path / 'x.pth', force=False) as f:
            f.write(b'second')
    assert (tmp_path / 'x.pth').read_bytes() == b'first'
    assert not list(tmp_path.glob('.*.tmp'))


def test_an_output_may_not_be_an_input_even_through_a_hard_link(tmp_path):
    source = tmp_path / 'ckpt.pth'
    source.write_bytes(b'weights')
    os.link(source, tmp_path / 'alias.pth')
    with pytest.raises(ValueError, match='refusing to overwrite the input file'):
        check_output_path(tmp_path / 'alias.pth', force=True, inputs=[source])
