"""The one checkpoint loader: every ``.pth`` petah_mm or mmengine reads goes through ``torch.load(weights_only=True)``.

mmengine 0.10.7 unpickles local files with a bare ``torch.load`` (safe only because torch >= 2.6
defaults to ``weights_only``) and ``http(s)://`` files with ``torch.hub``, which unpickles fully:
a payload in the hub cache runs inside ``init_weights()``. Importing petah_mm replaces mmengine's
loaders (``CheckpointLoader`` schemes), so ``init_cfg=dict(type='Pretrained')``, ``load_from``,
``--resume``, ``load_checkpoint`` and every tool read with ``weights_only=True`` plus the explicit
safe globals of :mod:`petah_mm.compat` (on torch < 2.4, the same allow-list through a restricted
unpickler). A URL is downloaded once to torch's hub cache
(``$TORCH_HOME/hub/checkpoints``) and the cached file is read the same way. Schemes that fetch
from elsewhere (``open-mmlab://``, ``s3://`` ...) are refused with the reason. Every file is checked
before unpickling (its zip archive, and its pickle opcode by opcode: only what torch.save writes) and
after, so that its content is bounded by its size (:mod:`petah_mm.engine.checkpoint_bounds`), and a
load that changed class-level state is refused. Every refusal names the file and the rule it breaks,
quoting at most a few hundred characters of the offending value.
"""
import hashlib
import io
import os
import os.path as osp
import pickle
import re
import zipfile
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.runner import CheckpointLoader

from ..compat import safe_torch_load, short_text
from ..utils.fileio import file_sha256
from .checkpoint_bounds import archive_problem, content_problem, file_problem

#: a published file name ending in the first hex digits of its sha256 (mmdet/mmpretrain model zoos)
HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,64})\.\w+$')


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


# mmengine logs a loader's name after "load_from_": the scheme
def load_from_local(filename, map_location=None):
    return load_checkpoint_file(filename, map_location)


def cached_download(url: str, model_dir=None) -> str:
    """The hub-cache path of ``url``, downloaded (on local rank 0 first) if not cached yet.

    A name that ends in ``-<hex>.pth`` (the model zoos' sha256 prefix) is verified, cached or not.
    """
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    name = osp.basename(urlparse(url).path)
    if not name:
        raise ValueError(f'checkpoint URL {url!r} names no file')
    cached = osp.join(model_dir, name)
    hash_prefix = HASH_IN_NAME.search(name)
    rank, world_size = get_dist_info()
    if rank == 0 and not osp.exists(cached):
        os.makedirs(model_dir, exist_ok=True)
        torch.hub.download_url_to_file(url, cached, hash_prefix=hash_prefix and hash_prefix[1], progress=False)
    if world_size > 1:
        barrier()
    if hash_prefix:
        check_sha256_prefix(cached, hash_prefix[1], url)
    return cached


def check_sha256_prefix(path: str, prefix: str, url: str) -> None:
    digest = file_sha256(path)
    if not digest.startswith(prefix):
        raise CheckpointRefusedError(f'refused to load {path!r} (cached from {url}): its sha256 '
                                     f'{digest[:len(prefix)]}... does not start with {prefix}, as its '
                                     'name says; delete the file so that it is downloaded again')


def load_from_http(filename, map_location=None, model_dir=None):
    return load_checkpoint_file(cached_download(filename, model_dir), map_location)


def load_from_elsewhere(filename, map_location=None):
    raise CheckpointRefusedError(f'refused to load {filename!r}: petah_mm loads checkpoints only from local paths '
                                 'and http(s):// URLs, each read with weights_only=True; download the file and pass '
                                 'its path, or its https:// URL')


def register_checkpoint_loaders() -> None:
    """Make mmengine's ``CheckpointLoader`` use the loaders above for every scheme it knows."""
    others = [prefix for prefix in CheckpointLoader._schemes if prefix not in ('', 'http://', 'https://')]
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http, force=True)
    CheckpointLoader.register_scheme(prefixes=others, loader=load_from_elsewhere, force=True)
    from .package_weights import register_package_weights  # pypkg://: weights inside pip packages
    register_package_weights()
