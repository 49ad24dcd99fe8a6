from .amp import BF16OptimWrapper, amp_optim_wrapper
from .launch import apply_common_args, parse_tool_args, setup_cpu_distributed, show_predictions, tool_parser

__all__ = [
    'BF16OptimWrapper', 'amp_optim_wrapper', 'apply_common_args', 'parse_tool_args', 'setup_cpu_distributed',
    'show_predictions', 'tool_parser'
]
