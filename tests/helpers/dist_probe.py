"""Imported by the distributed test's training processes (custom_imports): dump each rank's trained weights.

Only parameters: BatchNorm statistics are per process on CPU (no SyncBN there) and are
broadcast from rank 0 at each forward, so they legitimately differ after the last one.
"""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpTaskStateHook(Hook):

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        torch.save(state, f'{runner.work_dir}/task_state_rank{runner.rank}.pt')
