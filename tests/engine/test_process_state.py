"""Loading a checkpoint changes no process-wide state: no class attribute of an allow-listed type, no registry.

The attack (issue 23): a weights-only checkpoint of allow-listed types only whose pickled ``HistoryBuffer``
carries ``statistics_methods={'mean': collections.Counter}`` replaced mmengine's class-wide statistics table,
and every later training run in the process crashed in ``LoggerHook``.
"""
import collections
import copy
import sys

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.registry import Registry
from mmengine.runner import Runner

from petah_mm.compat import class_state
from petah_mm.engine import CheckpointRefusedError, load_checkpoint_file


def process_state() -> dict:
    """What a load must leave as it was: the allow-listed classes' attributes (one level deep), every
    OpenMMLab registry's names, and torch's list of safe globals."""
    registries = {}
    for module in [m for name, m in list(sys.modules.items()) if name.endswith('.registry') and m is not None]:
        registries.update({f'{module.__name__}.{name}': dict(value._module_dict)
                           for name, value in vars(module).items() if isinstance(value, Registry)})
    return dict(classes=class_state(), registries=registries,
                safe_globals=list(torch.serialization.get_safe_globals()))


@pytest.fixture(params=['add_safe_globals', 'restricted_unpickler'])
def loader(request, monkeypatch):
    """Both load paths: torch's weights-only unpickler (torch >= 2.4), petah_mm's restricted one (torch < 2.4)."""
    if request.param == 'restricted_unpickler':
        monkeypatch.delattr(torch.serialization, 'add_safe_globals')
    return load_checkpoint_file


def save_with_state(path, obj, state: dict):
    """``torch.save`` of ``obj`` (a HistoryBuffer) pickling ``state`` as its state, as an attacker's file would."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(HistoryBuffer, '__getstate__', lambda self: state)
        torch.save(dict(message_hub=dict(log_scalars=dict(loss=obj))), path)
    return path


def buffer_state(**changes) -> dict:
    state = dict(max_length=10, _log_history=np.array([1.0, 3.0]), _count_history=np.array([1, 1]))
    return dict(state, **changes)


def test_history_buffer_that_replaces_the_class_statistics_is_refused(tmp_path, loader):
    path = save_with_state(tmp_path / 'evil.pth', HistoryBuffer(),
                           buffer_state(statistics_methods={'mean': collections.Counter}))
    before = process_state()
    with pytest.raises(CheckpointRefusedError, match=r"evil\.pth.*statistics_methods=\{'mean'.*class-wide"):
        loader(path)
    assert process_state() == before
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean


@pytest.mark.parametrize('state, reason', [
    (buffer_state(_statistics_methods={'mean': collections.Counter}), r"holds \['_statistics_methods'\]"),
    (buffer_state(max_length='10'), 'needs an int max_length'),
    (buffer_state(_log_history=[1.0]), 'two 1-D numeric arrays'),
    (buffer_state(statistics_methods=[1]), 'statistics_methods=\\[1\\]'),
])
def test_history_buffer_is_rebuilt_from_its_plain_data_only(tmp_path, loader, state, reason):
    path = save_with_state(tmp_path / 'odd.pth', HistoryBuffer(), state)
    before = process_state()
    with pytest.raises(CheckpointRefusedError, match=reason):
        loader(path)
    assert process_state() == before


class CallsHistoryBuffer:
    """Pickles as ``HistoryBuffer(...)`` called with arguments, which mmengine never writes."""

    def __reduce__(self):
        return HistoryBuffer, ([1.0], [1], 5)


def test_history_buffer_called_with_arguments_is_refused(tmp_path, loader):
    torch.save({'x': CallsHistoryBuffer()}, tmp_path / 'called.pth')
    with pytest.raises(CheckpointRefusedError, match=r'its pickle calls mmengine\.logging\.history_buffer\.'
                                                     r'HistoryBuffer\(<list>, <list>, 5\)'):
        loader(tmp_path / 'called.pth')


def test_genuine_history_buffer_loads_as_a_history_buffer(tmp_path, loader):
    buffer = HistoryBuffer()
    for value in (1.0, 2.0, 6.0):
        buffer.update(value)
    torch.save(dict(message_hub=dict(log_scalars=dict(loss=buffer))), tmp_path / 'epoch_1.pth')
    before = process_state()
    loaded = loader(tmp_path / 'epoch_1.pth')['message_hub']['log_scalars']['loss']
    assert type(loaded) is HistoryBuffer
    assert loaded.statistics('mean') == 3.0 and loaded.max() == 6.0 and loaded.current() == 6.0
    assert process_state() == before


class BuildsOnTheFloat64Dtype:
    """Pickles as numpy's built-in float64 dtype (an allow-listed type) given a big-endian state by BUILD."""

    def __reduce__(self):
        return type(np.dtype('float64')), (), (3, '>', None, None, None, -1, -1, 0)


def test_numpy_dtype_setstate_does_not_change_the_builtin_dtype(tmp_path, loader):
    torch.save({'dtype': BuildsOnTheFloat64Dtype()}, tmp_path / 'dtype.pth')
    before = process_state()
    try:
        loader(tmp_path / 'dtype.pth')
    except CheckpointRefusedError:
        pass  # refusing is as good as loading a copy; what matters is the state below
    assert process_state() == before
    assert np.zeros(1).dtype.str == np.dtype('float64').str == '<f8'


class CounterWithState:
    """Pickles as ``collections.Counter({'a': 1})`` followed by BUILD with a state."""

    def __reduce__(self):
        return collections.Counter, ({'a': 1},), {'x': 1}


def test_a_load_that_changes_class_state_is_refused_and_undone(tmp_path, loader, monkeypatch):
    """The check after every load: an allow-listed type whose ``__setstate__`` wrote class state (here a
    Counter given one by the test) is refused, and the class attribute put back."""
    def setstate(self, state):
        type(self).most_common = state  # reaches class-level state

    monkeypatch.setattr(collections.Counter, '__setstate__', setstate, raising=False)
    torch.save({'milestones': CounterWithState()}, tmp_path / 'counter.pth')
    most_common = collections.Counter.most_common
    with pytest.raises(CheckpointRefusedError, match=r'counter\.pth.*changed the class-level state.*most_common'):
        loader(tmp_path / 'counter.pth')
    assert collections.Counter.most_common is most_common


class Line(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)

    def forward(self, x, mode='loss'):
        return dict(loss=self.fc(x).square().mean())


def test_training_with_logger_statistics_works_after_a_refused_load(tmp_path):
    """The reported symptom: LoggerHook's smoothed statistics crashed in every later run of the process."""
    path = save_with_state(tmp_path / 'evil.pth', HistoryBuffer(),
                           buffer_state(statistics_methods={'mean': collections.Counter}))
    with pytest.raises(CheckpointRefusedError):
        load_checkpoint_file(path)
    data = [dict(x=torch.randn(2)) for _ in range(4)]
    runner = Runner(model=Line(), work_dir=str(tmp_path / 'run'), experiment_name='after-refused-load',
                    train_dataloader=dict(dataset=data, batch_size=2, collate_fn=dict(type='default_collate'),
                                          sampler=dict(type='DefaultSampler', shuffle=False)),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    train_cfg=dict(by_epoch=True, max_epochs=1),
                    default_hooks=dict(logger=dict(type='LoggerHook', interval=1), checkpoint=None),
                    log_level='WARNING')
    runner.train()
    loss = runner.message_hub.get_scalar('train/loss')
    assert np.isfinite(loss.statistics('mean', 2)), loss.data


def test_process_state_snapshot_sees_a_changed_statistics_table():
    """The helper above must be able to fail: it notices an entry added to the class-wide table."""
    before = process_state()
    table = HistoryBuffer._statistics_methods
    original = copy.copy(table)
    try:
        table['mean'] = collections.Counter
        assert process_state() != before
    finally:
        table.clear()
        table.update(original)
    assert process_state() == before
