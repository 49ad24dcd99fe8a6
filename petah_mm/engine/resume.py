"""A resume that cannot continue the same training is refused before the first step, saying why.

mmengine 0.10.7 resumes whatever its checkpoint holds: a model built with other adapter settings
loads non-strictly (shape mismatches are only logged), "resumed epoch: 2" is printed, and the run
fails at its first optimizer step; a ``last_checkpoint`` naming a file that is not a training
checkpoint fails with a bare ``IndexError``/``KeyError``; and a checkpoint whose ``meta`` holds
``config`` has that text *executed* as a Python config by ``Runner.resume``. Here:

* ``SafeCheckpointHook`` stores the config's adapter settings (:func:`adapter_settings`) in every
  checkpoint's ``meta``;
* ``tools/train.py`` calls :func:`check_resume` before the Runner is built, and the hook calls
  :func:`resume_problem` plus :func:`state_problem` when a Runner resumes (before the weights,
  optimizer or "resumed epoch" line), so a Runner built some other way is covered as well.
"""
import os.path as osp
from typing import Optional

from mmengine.runner import CheckpointLoader

from .checkpoint import CheckpointRefusedError

#: the key of ``meta`` that holds the adapter settings a checkpoint was trained with
META_KEY = 'adapter_settings'
_UNSET = '(not set)'


def plain(value):
    """A config value as plain dicts, lists and scalars (what a weights-only load accepts)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value if value is None or isinstance(value, (str, int, float)) else repr(value)


def adapter_settings(model_cfg) -> dict:
    """Every ``adapter`` dict in a model config, by its dotted path (``model.backbone.adapter``)."""
    found, stack = {}, [('model', model_cfg)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get('adapter'), dict):
                found[f'{path}.adapter'] = plain(node['adapter'])
            stack.extend((f'{path}.{k}', v) for k, v in node.items() if k != 'adapter')
        elif isinstance(node, (list, tuple)):
            stack.extend((f'{path}[{i}]', v) for i, v in enumerate(node))
    return found


def settings_problems(saved: dict, current: dict) -> list:
    """Each adapter setting that differs, with the checkpoint's and the config's value."""
    problems = []
    for path in sorted(set(saved) | set(current)):
        before, now = saved.get(path), current.get(path)
        if before is None or now is None:
            problems.append(f'{path}: checkpoint {before if before is not None else _UNSET}, '
                            f'config {now if now is not None else _UNSET}')
            continue
        problems += [f'{path}.{key}: checkpoint {before.get(key, _UNSET)!r}, config {now.get(key, _UNSET)!r}'
                     for key in sorted(set(before) | set(now)) if before.get(key, _UNSET) != now.get(key, _UNSET)]
    return problems


def resume_problem(checkpoint, model_cfg) -> Optional[str]:
    """Why training cannot resume from ``checkpoint`` with a model built from ``model_cfg`` (None: it can)."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or not {'epoch', 'iter'} <= set(meta):
        return ('it is not a training checkpoint (no meta with epoch and iter, as tools/train.py writes); to start '
                'a new run from its weights use load_from without resume')
    if 'config' in meta:
        return ("its meta holds 'config', Python text that mmengine's Runner.resume would execute; resume only "
                'from checkpoints written by this training')
    saved = meta.get(META_KEY, {})
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        return f'its meta {META_KEY!r} is not a dict of adapter settings'
    if META_KEY in meta and isinstance(model_cfg, dict):
        problems = settings_problems(saved, adapter_settings(model_cfg))
        if problems:
            return ('the config changes adapter settings the checkpoint was trained with ('
                    + '; '.join(problems) + '); resume with the checkpoint\'s settings, or start a new run '
                    'with load_from')
    return None


def state_problem(checkpoint_state: dict, model_state: dict) -> Optional[str]:
    """Which weights of the checkpoint do not fit the model: shapes, missing and unexpected keys."""
    shapes = [f'{k}: checkpoint {tuple(checkpoint_state[k].shape)}, model {tuple(v.shape)}'
              for k, v in model_state.items() if k in checkpoint_state and checkpoint_state[k].shape != v.shape]
    missing = sorted(model_state.keys() - checkpoint_state.keys())
    unexpected = sorted(checkpoint_state.keys() - model_state.keys())
    found = [f'{len(names)} {what} {names[:3]}' for what, names in (
        ('shape mismatches', shapes), ('weights missing from the checkpoint', missing),
        ('unexpected weights', unexpected)) if names]
    if not found:
        return None
    return (f'the model the config builds is not the one trained ({", ".join(found)}); resume with the config it '
            'was trained with, or start a new run with load_from')


def resume_source(cfg) -> Optional[str]:
    """The checkpoint a config resumes from: ``load_from``, else what ``work_dir/last_checkpoint`` names."""
    if not cfg.get('resume'):
        return None
    if cfg.get('load_from'):
        return cfg.load_from
    pointer = osp.join(cfg.work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None  # mmengine starts afresh ("Did not find last_checkpoint to be resumed")
    with open(pointer) as f:
        return f.read().strip()


def check_resume(cfg) -> None:
    """Refuse, before a Runner is built from ``cfg``, a resume whose checkpoint cannot continue this training."""
    source = resume_source(cfg)
    if source is None:
        return
    pointer = None if cfg.get('load_from') else osp.join(cfg.work_dir, 'last_checkpoint')
    named = f'{source!r} (named by {pointer})' if pointer else repr(source)
    try:
        checkpoint = CheckpointLoader.load_checkpoint(source, map_location='cpu')
    except (OSError, RuntimeError) as e:  # CheckpointRefusedError is a RuntimeError, as are torch's read errors
        raise CheckpointRefusedError(f'cannot resume from {named}: {e}' + (
            f'; write the path of one of this run\'s checkpoints into {pointer}, or delete it to start afresh'
            if pointer else '')) from None
    problem = resume_problem(checkpoint, cfg.get('model'))
    if problem:
        raise CheckpointRefusedError(f'cannot resume from {named}: {problem}')
