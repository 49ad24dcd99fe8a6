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

torch < 2.4 (the README's GPU recipe installs 2.1) has no ``add_safe_globals``: there,
:func:`safe_torch_load` passes torch's own weights-only allow-list plus these globals to a
restricted unpickler instead, so the same files load and the same payloads are refused.
"""
import codecs
import collections
import pickle
from types import SimpleNamespace

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


def restricted_pickle_module() -> SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` that resolves only allow-listed globals, named by module and name."""
    from torch import _weights_only_unpickler
    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    # numpy arrays pickled with protocol 2 (torch.save's default) carry their bytes as _codecs.encode(str,
    # 'latin1'); torch >= 2.5 allow-lists it too. It only turns a string into bytes.
    allowed['_codecs.encode'] = codecs.encode
    for obj in mmengine_checkpoint_globals():
        allowed[f'{obj.__module__}.{obj.__qualname__}'] = obj
        if obj.__module__.startswith('numpy._core'):  # written by numpy 1.x
            allowed[f'{obj.__module__.replace("numpy._core", "numpy.core")}.{obj.__qualname__}'] = obj

    class Unpickler(pickle.Unpickler):

        def find_class(self, module, name):
            if f'{module}.{name}' not in allowed:
                raise pickle.UnpicklingError(f'Unsupported global: GLOBAL {module}.{name} is not allow-listed')
            return allowed[f'{module}.{name}']

    return SimpleNamespace(__name__='petah_mm_restricted_pickle', Unpickler=Unpickler,
                           load=lambda file, **kwargs: Unpickler(file, **kwargs).load())


def safe_torch_load(file, map_location=None):
    """``torch.load(weights_only=True)`` with mmengine's globals allowed, on any torch >= 1.13."""
    if hasattr(torch.serialization, 'add_safe_globals'):
        return torch.load(file, map_location=map_location, weights_only=True)
    return torch.load(file, map_location=map_location, weights_only=False, pickle_module=restricted_pickle_module())


def allow_mmengine_checkpoints() -> None:
    if hasattr(torch.serialization, 'add_safe_globals'):  # torch >= 2.4; older torch does not default to weights_only
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    HistoryBuffer.__getstate__ = _history_buffer_state
