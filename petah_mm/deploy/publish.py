"""Model-zoo checkpoints: training state stripped, sha256 prefix in the name (mmdet's convention)."""
import hashlib
import io
from pathlib import Path
from typing import Sequence, Union

import torch

from ..utils import atomic_write

DEFAULT_SAVE_KEYS = ('meta', 'state_dict')


def publish_checkpoint(in_file: Union[str, Path], out_file: Union[str, Path],
                       save_keys: Sequence[str] = DEFAULT_SAVE_KEYS) -> Path:
    """Keep only ``save_keys`` (the optimizer, message hub and schedulers go) and name the file
    ``<out stem>-<first 8 hex digits of its sha256>.pth``; returns that path."""
    checkpoint = torch.load(in_file, map_location='cpu', weights_only=True)
    missing = [key for key in save_keys if key not in checkpoint]
    if missing:
        raise KeyError(f'{in_file} has no {missing}; it holds {sorted(checkpoint)}. Pass --save-keys '
                       'with keys it has')
    buffer = io.BytesIO()
    torch.save({key: checkpoint[key] for key in save_keys}, buffer)
    data = buffer.getvalue()
    out_file = Path(out_file)
    final = out_file.with_name(f'{out_file.stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth')
    with atomic_write(final) as f:
        f.write(data)
    return final
