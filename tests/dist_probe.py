"""Imported by the distributed test's training processes (custom_imports): dump each rank's task weights."""
import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpTaskStateHook(Hook):

    def after_run(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith('backbone.')}
        state.update({f'backbone.{k}': v for k, v in model.backbone.task_state_dict().items()})
        torch.save(state, f'{runner.work_dir}/task_state_rank{runner.rank}.pt')
