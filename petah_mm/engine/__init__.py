from .amp import BF16OptimWrapper, amp_optim_wrapper
from .checkpoint import CheckpointRefusedError, load_checkpoint_file, register_checkpoint_loaders
from .checkpoint_hook import SafeCheckpointHook
from .launch import apply_common_args, parse_tool_args, setup_cpu_distributed, show_predictions, tool_parser
from .optim_constructor import PETAHOptimWrapperConstructor

__all__ = [
    'BF16OptimWrapper', 'amp_optim_wrapper', 'CheckpointRefusedError', 'load_checkpoint_file',
    'register_checkpoint_loaders', 'SafeCheckpointHook', 'apply_common_args', 'parse_tool_args',
    'setup_cpu_distributed', 'show_predictions', 'tool_parser', 'PETAHOptimWrapperConstructor'
]
