"""Release and deployment: published checkpoints, task packages, merged exports, multi-task serving."""
from .merged import export_merged, merged_state_dict
from .multitask import MultiTaskModel, predict
from .packages import (build_task_model, build_trained_model, export_shared_backbone, export_task_package,
                       load_task_package, task_state)
from .publish import publish_checkpoint

__all__ = [
    'export_merged', 'merged_state_dict', 'MultiTaskModel', 'predict', 'build_task_model', 'build_trained_model',
    'export_shared_backbone', 'export_task_package', 'load_task_package', 'task_state', 'publish_checkpoint'
]
