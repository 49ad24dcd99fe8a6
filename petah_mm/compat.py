"""Keep ``torch.load(weights_only=True)`` working for mmengine checkpoints on torch >= 2.6.

torch 2.6 made ``weights_only=True`` the default, and mmengine 0.10.7 (the latest release)
still stores a few plain Python objects in its checkpoints: the message hub's
``HistoryBuffer`` with numpy arrays inside, and ``collections.Counter`` milestones of the LR
schedulers. Resuming then fails with "Unsupported global". Rather than switching
``weights_only`` off (which would run arbitrary code from any checkpoint), these exact types
are allow-listed once, on import.

``HistoryBuffer`` also pickles its class-level registry of statistics methods, whose
built-ins (``HistoryBuffer.min`` ...) pickle as ``getattr(HistoryBuffer, 'min')``.
Allow-listing ``getattr`` would let a checkpoint reach any attribute of any allowed object, so
instead the built-ins are left out of the pickled state: ``HistoryBuffer.__setstate__``
registers them again anyway. Checkpoints written without petah_mm imported keep the
``getattr`` and still need ``weights_only=False`` from a trusted source.
"""
import collections

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer


def mmengine_checkpoint_globals() -> list:
    """The non-tensor types an mmengine Runner checkpoint contains."""
    numpy_core = getattr(np, '_core', None) or np.core
    dtypes = {type(np.dtype(name)) for name in ('float64', 'float32', 'float16', 'int64', 'int32', 'bool')}
    return [
        HistoryBuffer,
        collections.Counter,
        numpy_core.multiarray._reconstruct,
        numpy_core.multiarray.scalar,
        np.ndarray,
        np.dtype,
        *sorted(dtypes, key=lambda t: t.__name__),
    ]


def _history_buffer_state(self) -> dict:
    """HistoryBuffer state with only the user-registered statistics methods."""
    state = dict(self.__dict__)
    state['statistics_methods'] = {
        name: method
        for name, method in self._statistics_methods.items() if getattr(HistoryBuffer, name, None) is not method
    }
    return state


def allow_mmengine_checkpoints() -> None:
    if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4; older torch does not default to weights_only
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    HistoryBuffer.__getstate__ = _history_buffer_state

