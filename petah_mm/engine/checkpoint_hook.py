"""Training checkpoints that survive a crash at any moment, and a resume that continues the same random stream.

mmengine 0.10.7's ``CheckpointHook`` deletes the oldest checkpoint *before* writing the new one,
writes it in place, and then points ``last_checkpoint`` at it: with ``max_keep_ckpts=1`` a kill
during the save leaves no complete checkpoint and a ``last_checkpoint`` naming a missing file.
``SafeCheckpointHook`` keeps the hook's options and changes the order:

1. the checkpoint is written to a temporary file, fsynced and renamed (``AtomicLocalBackend``);
2. ``last_checkpoint`` is replaced atomically, only once the file it names is complete;
3. only then are checkpoints beyond ``max_keep_ckpts`` removed. The ids still to be removed are
   stored in the new checkpoint, so a kill between 2 and 3 is cleaned up on resume.

It also stores the Python, NumPy and torch random states with each checkpoint and restores them
when training resumes from it, so the data augmentation (run in the main process with
``num_workers=0``, or in workers whose seeds mmengine derives from the run's seed) and dropout
draw the same numbers as in an uninterrupted run; and it stores the config's adapter settings, so
that a resume with other settings, or from a checkpoint that does not fit the model, is refused
when it is loaded (:mod:`petah_mm.engine.resume`), before any step.
"""
import os.path as osp
import random
from collections import deque

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import find_latest_checkpoint

from ..utils import atomic_write, write_bytes_atomic
from .checkpoint import CheckpointRefusedError
from .resume import META_KEY, adapter_settings, resume_problem, state_problem

ATOMIC_BACKEND = 'petah_atomic_local'


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend, but ``put`` writes through a temporary file and a rename."""

    def put(self, obj: bytes, filepath) -> None:
        write_bytes_atomic(filepath, obj, force=True)


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def rng_state() -> dict:
    """Every global random state a training step draws from, as tensors and plain containers."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state['state']['key'] = numpy_state['state']['key'].tolist()
    state = dict(python=random.getstate(), numpy=numpy_state, torch=torch.get_rng_state())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    numpy_state = dict(state['numpy'])
    numpy_state['state'] = dict(numpy_state['state'], key=np.asarray(numpy_state['state']['key'], dtype=np.uint32))
    np.random.set_state(numpy_state)
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) that writes atomically, removes old files last and saves RNG states."""

    def before_train(self, runner) -> None:
        local = '://' not in str(self.out_dir or runner.work_dir)
        if local and self.backend_args is None and self.file_client_args is None:
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        resumed = getattr(self, '_resumed_rng', None)
        if resumed is not None and resumed['iter'] == runner.iter > 0:
            set_rng_state(resumed['state'])
            runner.logger.info(f'restored the random states saved at iteration {runner.iter}')
        self._resumed_rng = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = rng_state()
        checkpoint['meta'][META_KEY] = adapter_settings(runner.cfg.get('model'))

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """A resume that cannot continue is refused here, before the weights are loaded.

        The random states are kept until ``before_train``, which knows whether this load was a resume (iter > 0).
        """
        if runner._resume:
            model = runner.model.module if is_model_wrapper(runner.model) else runner.model
            problem = resume_problem(checkpoint, runner.cfg.get('model')) or state_problem(
                checkpoint.get('state_dict', {}), model.state_dict())
            if problem:
                source = runner._load_from or find_latest_checkpoint(runner.work_dir)
                raise CheckpointRefusedError(f'cannot resume from {source!r}: {problem}')
        if 'rng_state' in checkpoint:
            self._resumed_rng = dict(state=checkpoint['rng_state'], iter=checkpoint.get('meta', {}).get('iter'))

    def _save_checkpoint_with_step(self, runner, step, meta):
        keep = list(self.keep_ckpt_ids) if self.max_keep_ckpts > 0 else []
        if self.max_keep_ckpts > 0 and (not keep or keep[-1] != step):
            keep.append(step)
        # stored in this checkpoint with the ids still to be removed: a resume finishes the removal
        runner.message_hub.update_info('keep_ckpt_ids', keep)
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            ckpt_filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if self.max_keep_ckpts > 0:
            self.keep_ckpt_ids = deque(keep[-self.max_keep_ckpts:], self.max_keep_ckpts)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        if not is_main_process():
            return
        with atomic_write(osp.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
            f.write(self.last_ckpt)
        for old in keep[:-self.max_keep_ckpts] if self.max_keep_ckpts > 0 else []:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # deepspeed saves directories
                self.file_backend.rmtree(path)
