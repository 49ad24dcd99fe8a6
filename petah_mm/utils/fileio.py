"""File writes that never leave a half-written checkpoint or adapter behind, and never overwrite by surprise."""
import io
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, Union

import torch

PathLike = Union[str, Path]


def default_mode(directory: bool = False) -> int:
    """The permissions ``open``/``mkdir`` would give under the current umask (0o666 / 0o777 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def stale_temp_files(path: Path) -> list:
    """Temporary files that an interrupted :func:`atomic_write` of ``path`` left next to it."""
    return sorted(path.parent.glob(f'.{path.name}.*.tmp'))


@contextmanager
def atomic_write(path: PathLike, mode: str = 'wb') -> Iterator[IO]:
    """Write to a temporary file next to ``path``, fsync it and rename it into place.

    A crash or exception mid-write leaves the previous file (if any) intact, because the
    rename only happens after the data is on disk. Temporary files of earlier, killed writes of
    the same target are removed first (one writer per target is assumed). The file gets the
    permissions a plain ``open`` would give, not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_temp_files(path):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), default_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_output_path(path: PathLike, force: bool = False, inputs: Iterable[PathLike] = ()) -> Path:
    """Refuse to replace an input of the same command, or (without ``force``) any existing file."""
    path = Path(path)
    for source in inputs:
        if Path(source).exists() and path.exists() and path.resolve() == Path(source).resolve():
            raise ValueError(f'refusing to overwrite the input file {str(source)!r} with an output; '
                             'choose another output path')
    if path.exists() and not force:
        raise FileExistsError(f'{str(path)!r} exists; choose another path or pass --force (force=True) to replace it')
    return path


def write_bytes_atomic(path: PathLike, data: bytes, force: bool = False, inputs: Iterable[PathLike] = ()) -> int:
    """:func:`atomic_write` of ``data`` after :func:`check_output_path`; returns the size in bytes."""
    path = check_output_path(path, force, inputs)
    with atomic_write(path) as f:
        f.write(data)
    return len(data)


def torch_bytes(obj) -> bytes:
    """``torch.save`` into memory, so that the bytes can be hashed or written atomically."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def save_torch_atomic(obj, path: PathLike, force: bool = False, inputs: Iterable[PathLike] = ()) -> int:
    """The one way petah_mm writes a ``.pth``: serialised in memory, then atomically; returns its size."""
    return write_bytes_atomic(path, torch_bytes(obj), force, inputs)
