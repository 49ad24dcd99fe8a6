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

mmengine's ``HistoryBuffer.__setstate__`` writes the pickled ``statistics_methods`` into the
*class-wide* table, so a checkpoint of allow-listed types only (``{'mean': collections.Counter}``)
could break every later training run in the process. The name ``HistoryBuffer`` therefore
resolves, while unpickling, to :class:`CheckpointHistoryBuffer`, which rebuilds the buffer from its
plain data and refuses any other state; and :func:`safe_torch_load` compares the class-level state
of every allow-listed type before and after a load (:func:`class_state`), restoring it and refusing
the file if anything changed.

Below torch 2.6, :func:`safe_torch_load` passes torch's own weights-only allow-list plus these
globals to a restricted unpickler instead: torch 2.1 (the README's GPU recipe) has no
``add_safe_globals``, and 2.4's cannot register a global under another pickled name, which
``CheckpointHistoryBuffer`` needs. The same files load and the same payloads are refused: the
restricted unpickler maps Python 2 names (``__builtin__.set``, as torch.save's protocol 2 writes
builtins) as torch's does (:func:`global_name`), and before either runs,
:mod:`petah_mm.engine.checkpoint_bounds` checks every call of the pickle against what torch.save,
numpy and mmengine write (``_codecs.encode`` only with ``latin1``). Messages quote values from a
file through :func:`short_repr` / :func:`short_text`, never whole.
"""
import _compat_pickle
import codecs
import collections
import copy
import pickle
import re
import reprlib
from types import SimpleNamespace

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer

#: the dtypes whose classes are allow-listed (numpy pickles an array's dtype as a dtype instance)
DTYPE_NAMES = ('float64', 'float32', 'float16', 'int64', 'int32', 'bool')
#: what a pickled HistoryBuffer's state may hold (``statistics_methods``: see CheckpointHistoryBuffer)
HISTORY_BUFFER_STATE = ('max_length', '_log_history', '_count_history', 'statistics_methods')


def short_repr(value, limit: int = 200) -> str:
    """``repr`` of a value read from a file, at most about ``limit`` characters, a few levels and items deep.

    A refusal never echoes a whole payload (a 5 MB name), and a container that shares itself, whose full
    ``repr`` takes exponential time, costs no more than a small one. Only built-in containers and scalars are
    walked; anything else is shown by its type name, since its own ``repr`` could be unbounded.
    """
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother = 3, limit, limit
    shown.repr_instance = lambda obj, level: scalar_repr(obj, limit)
    return shown.repr(value)


def short_text(text: str, limit: int = 300) -> str:
    """A message or name read from a file, cut to ``limit`` characters."""
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text)} characters)'


def scalar_repr(obj, limit: int) -> str:
    """What :func:`short_repr` shows of a value other than a built-in container, str or int."""
    if obj is None or isinstance(obj, (bool, float, complex)):
        return repr(obj)
    if isinstance(obj, (bytes, bytearray)):
        return repr(obj[:limit]) + ('...' if len(obj) > limit else '')
    name = getattr(obj, '__qualname__', None)
    if isinstance(name, str):  # a class or function: its name, not its repr
        return f'<{getattr(obj, "__module__", "?")}.{name[:limit]}>'
    return f'<{type(obj).__module__}.{type(obj).__qualname__} object>'


class CheckpointHistoryBuffer(HistoryBuffer):
    """What a checkpoint's ``HistoryBuffer`` unpickles as: rebuilt from its plain data, then a ``HistoryBuffer``.

    It is registered under ``HistoryBuffer``'s pickled name, so it is never seen after loading.
    """

    def __init__(self, *args, **kwargs):
        raise pickle.UnpicklingError('a pickled HistoryBuffer is rebuilt from its state only; this pickle calls it '
                                     'with arguments, which mmengine never writes')

    def __setstate__(self, state):
        self.__dict__.update(history_buffer_data(state))
        self.__class__ = HistoryBuffer


def history_buffer_data(state) -> dict:
    """The instance attributes of a pickled HistoryBuffer, or ``UnpicklingError`` saying what else it holds."""
    if not isinstance(state, dict) or not set(state) <= set(HISTORY_BUFFER_STATE):
        extra = sorted(short_text(str(key), 100) for key in set(state) - set(HISTORY_BUFFER_STATE)) \
            if isinstance(state, dict) else state
        raise pickle.UnpicklingError(f'a pickled HistoryBuffer holds {short_repr(extra)}; only '
                                     f'{HISTORY_BUFFER_STATE} are rebuilt')
    methods = state.get('statistics_methods', {})
    if not isinstance(methods, dict) or any(HistoryBuffer._statistics_methods.get(name) is not method
                                            for name, method in methods.items()):
        raise pickle.UnpicklingError(f'a pickled HistoryBuffer sets statistics_methods={short_repr(methods)}, which '
                                     "would replace mmengine's class-wide HistoryBuffer statistics for the whole "
                                     'process')
    data = {key: state[key] for key in HISTORY_BUFFER_STATE[:3] if key in state}
    arrays = [data.get(key) for key in HISTORY_BUFFER_STATE[1:3]]
    if not all(isinstance(a, np.ndarray) and a.ndim == 1 and a.dtype.kind in 'biuf' for a in arrays) or \
            len(arrays[0]) != len(arrays[1]) or type(data.get('max_length')) is not int:
        raise pickle.UnpicklingError('a pickled HistoryBuffer needs an int max_length and two 1-D numeric arrays '
                                     '_log_history and _count_history of one length')
    return data


def mmengine_checkpoint_globals() -> list:
    """The non-tensor types an mmengine Runner checkpoint contains, each as a global or (global, pickled name)."""
    numpy_core = getattr(np, '_core', None) or np.core
    dtypes = {type(np.dtype(name)) for name in DTYPE_NAMES}
    return [
        (CheckpointHistoryBuffer, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
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
        obj, name = obj if isinstance(obj, tuple) else (obj, f'{obj.__module__}.{obj.__qualname__}')
        allowed[name] = obj
        if name.startswith('numpy._core'):  # written by numpy 1.x
            allowed[name.replace('numpy._core', 'numpy.core')] = obj

    class Unpickler(pickle.Unpickler):

        def find_class(self, module, name):
            full_name = global_name(module, name)
            if full_name not in allowed:
                raise pickle.UnpicklingError(f'Unsupported global: GLOBAL {short_text(full_name, 200)} is not '
                                             'allow-listed')
            return allowed[full_name]

    return SimpleNamespace(__name__='petah_mm_restricted_pickle', Unpickler=Unpickler,
                           load=lambda file, **kwargs: Unpickler(file, **kwargs).load())


def global_name(module: str, name: str) -> str:
    """``module.name`` of a pickled global, with Python 2's names mapped as torch's weights-only unpickler maps them
    (``__builtin__.set``: torch.save's protocol 2 writes builtins under their Python 2 names)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f'{module}.{name}'


def allowed_classes() -> list:
    """The allow-listed classes whose class-level state a load must leave as it was."""
    listed = [obj[0] if isinstance(obj, tuple) else obj for obj in mmengine_checkpoint_globals()]
    return [HistoryBuffer] + [obj for obj in listed if isinstance(obj, type)]


def class_state() -> dict:
    """A comparable copy of the class attributes of :func:`allowed_classes` and of numpy's built-in dtypes.

    Mutable attributes (mmengine's ``_statistics_methods`` table) are copied one level deep.
    """
    state = {cls: {name: copy.copy(value) if isinstance(value, (dict, list, set)) else value
                   for name, value in vars(cls).items()} for cls in allowed_classes()}
    state.update({np.dtype(name): np.dtype(name).__reduce__() for name in DTYPE_NAMES})
    return state


def restore_class_state(before: dict) -> list:
    """Put the class attributes of ``before`` (a :func:`class_state`) back; returns what had changed.

    numpy ignores ``__setstate__`` on its built-in dtypes; were that to change, the change is reported.
    """
    changed = []
    for owner, attributes in before.items():
        if isinstance(owner, np.dtype):
            changed += [repr(owner)] if owner.__reduce__() != attributes else []
            continue
        for name in set(attributes) | set(vars(owner)):
            now = vars(owner).get(name)
            if name in attributes and (now is attributes[name] or now == attributes[name]):
                continue
            changed.append(f'{owner.__qualname__}.{name}')
            if name not in attributes:
                delattr(owner, name)
            elif isinstance(now, (dict, list, set)) and type(now) is type(attributes[name]):
                now.clear()  # the same object: others may hold it (HistoryBuffer._statistics_methods)
                if isinstance(now, list):
                    now.extend(attributes[name])
                else:
                    now.update(attributes[name])
            else:
                setattr(owner, name, attributes[name])
    return sorted(changed)


def torch_names_safe_globals() -> bool:
    """Whether ``add_safe_globals`` takes (global, pickled name) pairs (torch 2.4 does not; >= 2.6 does)."""
    version = tuple(int(part) for part in re.findall(r'\d+', torch.__version__)[:2])
    return hasattr(torch.serialization, 'add_safe_globals') and version >= (2, 6)


def safe_torch_load(file, map_location=None):
    """``torch.load(weights_only=True)`` with mmengine's globals allowed, on any torch >= 1.13.

    Raises ``pickle.UnpicklingError`` (after putting it back) if the load changed class-level state.
    """
    before = class_state()
    if torch_names_safe_globals():
        loaded = torch.load(file, map_location=map_location, weights_only=True)
    else:
        loaded = torch.load(file, map_location=map_location, weights_only=False,
                            pickle_module=restricted_pickle_module())
    changed = restore_class_state(before)
    if changed:
        raise pickle.UnpicklingError(f'loading it changed the class-level state {changed} (now restored)')
    return loaded


def allow_mmengine_checkpoints() -> None:
    if torch_names_safe_globals():  # torch < 2.6 does not default to weights_only
        torch.serialization.add_safe_globals(mmengine_checkpoint_globals())
    HistoryBuffer.__getstate__ = _history_buffer_state
    HistoryBuffer()  # registers the built-in statistics in the class-wide table now, not during a load
