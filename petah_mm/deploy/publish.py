"""Model-zoo checkpoints: training state stripped, sha256 prefix in the name (mmdet's convention)."""
import hashlib
from pathlib import Path
from typing import Sequence, Union

from ..engine.checkpoint import load_checkpoint_file
from ..utils import torch_bytes, write_bytes_atomic

DEFAULT_SAVE_KEYS = ('meta', 'state_dict')


def publish_checkpoint(in_file: Union[str, Path], out_file: Union[str, Path],
                       save_keys: Sequence[str] = DEFAULT_SAVE_KEYS, force: bool = False) -> Path:
    """Keep only ``save_keys`` (the optimizer, message hub, schedulers and random states go) and name the
    file ``<out stem>-<first 8 hex digits of its sha256>.pth``; returns that path. An existing file
    is refused unless ``force``, the input never overwritten."""
    checkpoint = load_checkpoint_file(in_file, map_location='cpu')
    missing = [key for key in save_keys if key not in checkpoint]
    if missing:
        raise KeyError(f'{in_file} has no {missing}; it holds {sorted(checkpoint)}. Pass --save-keys '
                       'with keys it has')
    data = torch_bytes({key: checkpoint[key] for key in save_keys})
    out_file = Path(out_file)
    final = out_file.with_name(f'{out_file.stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth')
    write_bytes_atomic(final, data, force, inputs=[in_file])
    return final
