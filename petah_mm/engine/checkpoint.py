"""The one checkpoint loader: every ``.pth`` petah_mm or mmengine reads goes through ``torch.load(weights_only=True)``.

mmengine 0.10.7 unpickles local files with a bare ``torch.load`` (safe only because torch >= 2.6
defaults to ``weights_only``) and ``http(s)://`` files with ``torch.hub``, which unpickles fully:
a payload in the hub cache runs inside ``init_weights()``. Importing petah_mm replaces mmengine's
loaders (``CheckpointLoader`` schemes), so ``init_cfg=dict(type='Pretrained')``, ``load_from``,
``--resume``, ``load_checkpoint`` and every tool read with ``weights_only=True`` plus the explicit
safe globals of :mod:`petah_mm.compat` (on torch < 2.4, the same allow-list through a restricted
unpickler). A URL is downloaded once to torch's hub cache
(``$TORCH_HOME/hub/checkpoints``) and the cached file is read the same way. Schemes that fetch
from elsewhere (``open-mmlab://``, ``s3://`` ...) are refused with the reason, and ``pypkg://`` names weights
inside pip packages (:mod:`petah_mm.engine.package_weights`). Every file is then read by
:func:`~petah_mm.engine.checkpoint_file.load_checkpoint_file`: checked before unpickling (its zip archive, and
its pickle opcode by opcode: only what torch.save writes) and after, so that its content is bounded by its size
(:mod:`petah_mm.engine.checkpoint_bounds`), and a load that changed class-level state is refused. Every refusal
names the file and the rule it breaks, quoting at most a few hundred characters of the offending value.
"""
import os
import os.path as osp
import re
from urllib.parse import urlparse

import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.runner import CheckpointLoader

from ..utils.fileio import file_sha256
from .checkpoint_file import CheckpointRefusedError, load_checkpoint_file
from .package_weights import register_package_weights

#: a published file name ending in the first hex digits of its sha256 (mmdet/mmpretrain model zoos)
HASH_IN_NAME = re.compile(r'-([a-f0-9]{8,64})\.\w+$')


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
    register_package_weights()  # pypkg://: weights inside pip packages
