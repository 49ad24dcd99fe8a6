"""File writes that never leave a half-written file behind, never overwrite by surprise, and never race.

Every petah_mm writer goes through :func:`atomic_write`. The data goes to a temporary file of the
writer's own next to the target (``.<target>.<host>.<pid>.<random>.tmp``), is fsynced, and is then
published in one step:

* without ``force``, by ``os.link(tmp, target)``, which fails if the target exists: the refusal
  and the write are one atomic step, so of two concurrent writers exactly one wins and the other
  gets :class:`FileExistsError` (on a filesystem without hard links the name is claimed with
  ``O_CREAT | O_EXCL`` first, then replaced by the temporary file);
* with ``force``, by ``os.replace``, which swaps the complete new file in.

A writer removes its own temporary file, and the temporary files of earlier writes of the same
target whose writer is known to be dead (this host, pid no longer running). A live writer's
temporary file, or one written on another host, is never touched. A directory (a task package) is
written the same way: into a staging directory of the writer's own beside it
(``.<name>.<host>.<pid>.<random>.staging``, :func:`staging_directory`), which is renamed into place
complete (:func:`publish_directory`), and whose leftovers after a kill the next writer removes.
"""
import errno
import glob
import hashlib
import io
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

import torch

PathLike = Union[str, Path]
#: ``os.link`` errors that mean "this filesystem has no hard links", not "the target exists"
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK}


def default_mode(directory: bool = False) -> int:
    """The permissions ``open``/``mkdir`` would give under the current umask (0o666 / 0o777 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def host_tag() -> str:
    """This host's name as it appears in temporary file names (no dots, so the name parses back)."""
    return re.sub(r'[^A-Za-z0-9-]', '-', socket.gethostname()) or 'host'


def temp_prefix(path: Path) -> str:
    return f'.{path.name}.{host_tag()}.{os.getpid()}.'


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (signal 0 checks without signalling; only POSIX can ask safely)."""
    if os.name != 'posix':
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def dead_writers(path: Path, suffix: str) -> list:
    """What earlier writers of ``path`` left beside it (``.<name>.<host>.<pid>.<random><suffix>``) and are dead:
    this host, pid no longer running. Another host's entries, and those named otherwise, are never listed."""
    stale = []
    for candidate in path.parent.glob(f'.{glob.escape(path.name)}.*{suffix}'):
        owner = candidate.name[len(path.name) + 2:-len(suffix)].split('.')
        if len(owner) == 3 and owner[0] == host_tag() and owner[1].isdigit() and not process_alive(int(owner[1])):
            stale.append(candidate)
    return sorted(stale)


def stale_temp_files(path: Path) -> list:
    """Temporary files of earlier writes of ``path`` whose writer is dead: killed on this host mid-write."""
    return [candidate for candidate in dead_writers(Path(path), '.tmp') if not candidate.is_dir()]


def stale_staging_directories(path: Path) -> list:
    """Staging directories of earlier writes of the directory ``path`` whose writer is dead (not symbolic links)."""
    return [candidate for candidate in dead_writers(Path(path), '.staging')
            if candidate.is_dir() and not candidate.is_symlink()]


def staging_directory(path: PathLike) -> Path:
    """A new, empty directory of this writer's own beside the directory ``path``, to fill and then publish as
    ``path`` (:func:`publish_directory`): ``.<name>.<host>.<pid>.<random>.staging``, mode 0700.

    The staging directories of earlier writers of ``path`` that were killed on this host are removed first,
    as :func:`atomic_write` removes their temporary files; a live writer's, or another host's, is never touched.
    The caller removes its own if it fails; a SIGKILL leaves it to the next writer.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_staging_directories(path):
        try:
            shutil.rmtree(stale)
        except FileNotFoundError:  # another writer is removing it at the same moment
            pass
    return Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path), suffix='.staging'))


def fsync_directory(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable (not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def exists_error(path: Path) -> FileExistsError:
    return FileExistsError(f'{str(path)!r} exists; choose another path or pass --force (force=True) to replace it')


def publish_exclusive(tmp: str, path: Path) -> None:
    """Give the complete ``tmp`` the name ``path`` unless that name exists, in one atomic step."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise exists_error(path) from None
    except OSError as e:
        if e.errno not in NO_HARD_LINKS:
            raise
        try:  # no hard links here: claim the name atomically, then put the complete file on it
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, default_mode()))
        except FileExistsError:
            raise exists_error(path) from None
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(path)  # the empty name this writer claimed
            raise
        return
    os.unlink(tmp)


@contextmanager
def atomic_write(path: PathLike, mode: str = 'wb', force: bool = True) -> Iterator[IO]:
    """Write to a temporary file of this writer next to ``path``, fsync it and publish it as ``path``.

    A crash or exception mid-write leaves the previous file (if any) intact, because publishing
    only happens after the data is on disk. ``force=False`` refuses an existing ``path`` at the
    moment of publishing (:class:`FileExistsError`), so a concurrent writer can never be replaced
    silently. The file gets the permissions a plain ``open`` would give, not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temp_files(path):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path), suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), default_mode())
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, path)
        else:
            publish_exclusive(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path, or (hard links) the same inode."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_path(path: PathLike, force: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Refuse to replace an input of the same command, or (without ``force``) any existing file.

    An early refusal, before the work: the writers refuse an existing file again, atomically, when
    they publish (:func:`atomic_write`)."""
    path = Path(path)
    for source in inputs:
        if same_file(path, Path(source)):
            raise ValueError(f'refusing to overwrite the input file {str(source)!r} with an output '
                             f'{str(path)!r}; choose another output path')
    if path.exists() and not force:
        raise exists_error(path)
    return path


def write_bytes_atomic(path: PathLike, data: bytes, force: bool = False, inputs: Iterable[PathLike] = ()) -> int:
    """:func:`atomic_write` of ``data`` after :func:`check_output_path`; returns the size in bytes."""
    path = check_output_path(path, force, inputs)
    with atomic_write(path, force=force) as f:
        f.write(data)
    return len(data)


def publish_directory(staging: Path, path: Path) -> None:
    """Rename a completely written directory into place; an existing ``path`` is refused, not replaced.

    ``rename`` itself refuses a non-empty target, so of two concurrent writers exactly one wins;
    an empty directory at ``path`` is refused up front (a racing ``mkdir`` of an empty one
    would be replaced, losing nothing)."""
    if path.exists() or path.is_symlink():
        raise FileExistsError(f'{str(path)!r} exists; remove it or choose another directory')
    try:
        os.rename(staging, path)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
            raise FileExistsError(f'{str(path)!r} exists (written meanwhile by another process); remove it or '
                                  'choose another directory') from None
        raise
    fsync_directory(path.parent)


def file_sha256(path: PathLike) -> str:
    """The hex sha256 of a file, read in 1 MB blocks (weight files can be large)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def torch_bytes(obj) -> bytes:
    """``torch.save`` into memory, so that the bytes can be hashed or written atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch_atomic(obj, path: PathLike, force: bool = False, inputs: Iterable[PathLike] = ()) -> int:
    """The one way petah_mm writes a ``.pth``: serialised in memory, then atomically; returns its size."""
    return write_bytes_atomic(path, torch_bytes(obj), force, inputs)
