from .launch import apply_common_args, setup_cpu_distributed, show_predictions

__all__ = ['apply_common_args', 'setup_cpu_distributed', 'show_predictions']
