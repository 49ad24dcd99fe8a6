from .launch import apply_common_args, parse_tool_args, setup_cpu_distributed, show_predictions, tool_parser
from .optim_constructor import PETAHOptimWrapperConstructor

__all__ = [
    'apply_common_args', 'parse_tool_args', 'setup_cpu_distributed', 'show_predictions', 'tool_parser',
    'PETAHOptimWrapperConstructor'
]
