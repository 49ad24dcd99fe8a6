"""One of two processes racing to write the same files (tests/utils/test_fileio_races.py).

    python race_writer.py TAG WORK_DIR

For every step of :data:`STEPS` both writers meet at a barrier (files in WORK_DIR), then write the
step's target without ``force``, with a delay injected into ``os.fsync`` of the data (between
writing the temporary file and publishing it), so both are mid-write at once. ``staggered``: writer
``a`` is slow, writer ``b`` starts once ``a``'s temporary file exists. One JSON line per step says
what happened: ``ok`` or the exception's type and message.
"""
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path

import torch

from petah_mm.utils import save_torch_atomic, write_bytes_atomic
from petah_mm.utils.fileio import atomic_write, publish_directory
from petah_mm.utils.tensor_file import write_tensor_file

#: (step, writer, seconds each of a and b sleeps before publishing)
STEPS = [('bytes', 'bytes', (1., 1.)), ('adapter', 'adapter', (1., 1.)), ('checkpoint', 'checkpoint', (1., 1.)),
         ('package', 'package', (1., 1.)), ('staggered', 'adapter', (3., 0.))]
DELAY = {'seconds': 0.}
real_fsync = os.fsync


def slow_fsync(fd):
    if stat.S_ISREG(os.fstat(fd).st_mode):
        time.sleep(DELAY['seconds'])
    real_fsync(fd)


def wait_for(predicate, timeout=60.):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError('the other writer never arrived')
        time.sleep(0.005)


def payload(tag: str, step: str) -> bytes:
    return f'{step} by {tag}\n'.encode() * 50_000


def write(writer: str, target: Path, tag: str, step: str) -> None:
    value = float(ord(tag))
    if writer == 'bytes':
        write_bytes_atomic(target, payload(tag, step))
    elif writer == 'adapter':  # what save_adapter and the package exports call
        write_tensor_file(target, dict(w=torch.full((256, 256), value)), dict(writer=tag), kind='adapter')
    elif writer == 'checkpoint':  # merged exports, published, pruned and unpacked checkpoints
        save_torch_atomic(dict(writer=tag, w=torch.full((256, 256), value)), target)
    else:  # a task package: staged in a directory of its own, renamed into place
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f'.{target.name}.'))
        with atomic_write(staging / 'config.json', 'wb') as f:
            f.write(payload(tag, step))
        publish_directory(staging, target)


def main():
    tag, work = sys.argv[1], Path(sys.argv[2])
    os.fsync = slow_fsync
    for step, writer, delays in STEPS:
        (work / f'ready-{step}-{tag}').touch()
        wait_for(lambda: all((work / f'ready-{step}-{t}').exists() for t in 'ab'))
        target = work / step
        DELAY['seconds'] = delays['ab'.index(tag)]
        if step == 'staggered' and tag == 'b':
            wait_for(lambda: any(work.glob(f'.{step}.*.tmp')))
        try:
            write(writer, target, tag, step)
            result = dict(step=step, tag=tag, result='ok')
        except Exception as e:  # noqa: BLE001  (the test judges it)
            result = dict(step=step, tag=tag, result=type(e).__name__, message=str(e))
        print(json.dumps(result), flush=True)


if __name__ == '__main__':
    main()
