"""Module-tree surgery that works on every torch version petah_mm supports (>= 2.1)."""
from torch import nn


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule called ``name`` (dotted path) is."""
    parent, _, leaf = name.rpartition('.')
    owner = root.get_submodule(parent) if parent else root
    if leaf not in owner._modules:
        raise KeyError(f'{type(root).__name__} has no submodule {name!r}')
    owner._modules[leaf] = new
