"""One local checkpoint file read safely: ``torch.load(weights_only=True)``, bounded by the file's size.

The reader under every loader: the schemes of :mod:`petah_mm.engine.checkpoint` and the packaged weights of
:mod:`petah_mm.engine.package_weights` call it, and it imports neither (checkpoint registers the packaged weights'
scheme, so the imports run checkpoint -> package_weights -> this module). The file is checked before
unpickling (its zip archive, and its pickle opcode by opcode: only what torch.save writes) and after, so that
its content is bounded by its size (:mod:`petah_mm.engine.checkpoint_bounds`). Every refusal names the file and
the rule it breaks, quoting at most a few hundred characters of the offending value.
"""
import hashlib
import io
import os.path as osp
import pickle
import re
import zipfile
from pathlib import Path
from typing import Optional

from ..compat import safe_torch_load, short_text
from .checkpoint_bounds import archive_problem, content_problem, file_problem


class CheckpointRefusedError(RuntimeError):
    """A checkpoint that was not loaded because loading it could run code or it is not what it claims."""


def load_checkpoint_file(filename, map_location=None, pinned_sha256=None):
    """``torch.load(weights_only=True)`` of a local file, bounded by its size, with a refusal that says what and why.

    ``pinned_sha256`` is the full digest a file is known to have in advance (a packaged weight file,
    :mod:`petah_mm.engine.package_weights`). The file is then read once, and only bytes with that
    digest are unpickled: they are the very bytes that were vetted, so torch's pre-1.6 format, whose
    declared sizes cannot be bounded before unpickling, is accepted for them. Pinned zip files are
    checked before loading like any other, and all content is checked after loading.
    """
    filename = osp.expanduser(str(filename))
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} does not exist')
    if pinned_sha256 is None:
        problem = file_problem(filename)
        source = filename
    else:
        data = pinned_bytes(filename, pinned_sha256)
        problem = pinned_problem(data)
        source = io.BytesIO(data)
    if problem:
        raise CheckpointRefusedError(f'refused to load {filename!r}: {problem}')
    try:
        loaded = safe_torch_load(source, map_location)
    except pickle.UnpicklingError as e:
        raise CheckpointRefusedError(refusal_message(filename, e)) from None
    except Exception as e:  # torch's own refusals (a bare RuntimeError), argument errors of the rebuild functions
        raise CheckpointRefusedError(f'refused to load {filename!r}: torch.load(weights_only=True) failed on it '
                                     f'({type(e).__name__}: {short_text(str(e))})') from e
    problem = content_problem(loaded, osp.getsize(filename))
    if problem:
        raise CheckpointRefusedError(f'refused to load {filename!r}: {problem}')
    return loaded


def pinned_bytes(filename: str, sha256: str) -> bytes:
    data = Path(filename).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise CheckpointRefusedError(f'refused to load {filename!r}: its sha256 {digest} '
                                     f'is not the pinned {sha256}; reinstall the package that ships it')
    return data


def pinned_problem(data: bytes) -> Optional[str]:
    """The archive checks of :func:`~petah_mm.engine.checkpoint_bounds.file_problem` for pinned bytes in torch's
    zip format; the pre-1.6 format, which cannot be checked before unpickling, is accepted for them."""
    if data[:4] != b'PK\x03\x04':
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive_problem(archive, len(data), io.BytesIO(data))
    except zipfile.BadZipFile as e:
        return f'it is not a readable zip archive ({short_text(str(e))})'


def refusal_message(filename: str, error: Exception) -> str:
    found = re.search(r'Unsupported global: GLOBAL (\S{1,200})', str(error))
    reason = re.search(r'WeightsUnpickler error:\s*(.+)', str(error))  # torch wraps its unpickler's reason
    reason = short_text(reason[1] if reason else str(error).splitlines()[0])
    what = f'its pickle needs {found[1]}' if found else f'its pickle is not plain data ({reason})'
    message = (f'refused to load {filename!r}: {what}, which is not a tensor, a plain container or allow-listed '
               'mmengine training state. petah_mm reads every checkpoint with torch.load(weights_only=True) so '
               'that a shared file cannot run code. ')
    return message + ('If you trust the file, re-save just its weights with plain tensors (e.g. '
                      'torch.save({"state_dict": sd}, path)) in a separate process and load that')
