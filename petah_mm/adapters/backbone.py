"""What a backbone gains from one ``adapter=dict(method=...)`` argument.

``AdaptedBackboneMixin`` goes in front of a backbone class that declares ``adapter_targets``
and ``arch_name``. It injects the method's adapters at construction (before the optimizer and
DDP see the parameters), freezes everything the method does not train, keeps BatchNorm
statistics frozen where the method says so (as affine maps that keep no activations for
backward), re-zeroes the adapters after any ``init_cfg`` has
run, and reads and writes adapter files.
"""
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
from mmengine.logging import print_log

from ..utils import convert_frozen_batchnorm, freeze_batchnorm_stats
from .injector import adapted_layers, inject_adapters, set_trainable, task_parameter_names
from .io import check_adapter, check_task_id, fingerprint, read_tensor_file, write_tensor_file
from .methods import build_plan


class AdaptedBackboneMixin:
    #: target group -> regexes over module names; each backbone declares its own
    adapter_targets: Dict[str, Sequence[str]]
    arch_name: str
    #: state-dict prefixes of frozen modules that differ between tasks (e.g. output norms),
    #: which therefore belong to each task, not to the shared weights
    task_owned_prefixes: Sequence[str] = ()

    def setup_adapter(self, adapter: dict) -> None:
        self.adapter_cfg = dict(adapter)
        self.adapter_plan = build_plan(**adapter)
        self.adapted_groups = inject_adapters(self, self.adapter_targets, self.adapter_plan)
        self.task_param_names = task_parameter_names(self, self.adapter_targets, self.adapter_plan)
        set_trainable(self, self.task_param_names)
        self.norm_eval = self.adapter_plan.norm_eval
        convert_frozen_batchnorm(self)
        print_log(f'{type(self).__name__}({self.arch_name}): {self.adapter_plan.describe()}, '
                  f'{sum(p.numel() for p in self.parameters() if p.requires_grad):,} trainable '
                  'backbone parameters', logger='current')

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            freeze_batchnorm_stats(self)
        return self

    def trainable_by_group(self) -> Dict[str, int]:
        """Trainable parameters per adapter group, plus ``other`` (own weights that train).

        Their sum is the paper's "#Params": what one task adds to the shared backbone, heads excluded.
        """
        group_of = {layer: group for group, layers in self.adapted_groups.items() for layer in layers}
        counts = {group: 0 for group in self.adapted_groups}
        counts['other'] = 0
        for name, param in self.named_parameters():
            if param.requires_grad:
                layer = name.split('.adapter.')[0]
                counts[group_of[layer] if '.adapter.' in name else 'other'] += param.numel()
        return counts

    def reset_adapters(self) -> None:
        """Zero every delta again: identity with the frozen backbone, whatever ran before."""
        for layer in adapted_layers(self).values():
            layer.adapter.reset_parameters()

    def merge_adapters(self) -> None:
        for layer in adapted_layers(self).values():
            layer.merge()

    def unmerge_adapters(self) -> None:
        for layer in adapted_layers(self).values():
            layer.unmerge()

    @property
    def is_merged(self) -> bool:
        return any(layer.merged for layer in adapted_layers(self).values())

    def task_state_dict(self) -> Dict[str, torch.Tensor]:
        """The tensors one task owns: trained parameters, plus BatchNorm statistics if they train."""
        state = self.state_dict()
        names = set(self.task_param_names)
        if not self.norm_eval:
            names |= {name for name, _ in self.named_buffers() if name in state}
        return {name: state[name] for name in sorted(names)}

    def shared_state_dict(self) -> Dict[str, torch.Tensor]:
        """The frozen weights every task on this backbone shares: what is stored once on a device."""
        task = self.task_state_dict().keys()
        return {name: t for name, t in self.state_dict().items()
                if name not in task and not name.startswith(tuple(self.task_owned_prefixes))}

    def frozen_fingerprint(self) -> str:
        if self.is_merged:
            raise RuntimeError('adapters are merged into the frozen weights; call unmerge_adapters() '
                               'before saving, loading or fingerprinting an adapter')
        return fingerprint(self.shared_state_dict().items())

    def adapter_metadata(self) -> dict:
        return dict(
            backbone=type(self).__name__,
            arch=self.arch_name,
            method=self.adapter_plan.method,
            adapters={group: dict(type=cfg['type'], rank=cfg['rank'],
                                  alpha=float(cfg['rank'] if cfg['alpha'] is None else cfg['alpha']))
                      for group, cfg in self.adapter_plan.adapters.items()},
            dropout=self.adapter_cfg.get('dropout', 0.))

    def save_adapter(self, path: Union[str, Path], force: bool = False, task_id: Optional[str] = None) -> int:
        """Write this task's backbone tensors; returns the file size in bytes. An existing file is
        refused unless ``force``; ``task_id`` binds the file to a task package."""
        meta = dict(self.adapter_metadata(), frozen_fingerprint=self.frozen_fingerprint(), task_id=task_id)
        return write_tensor_file(path, self.task_state_dict(), meta, kind='adapter', force=force)

    @torch.no_grad()
    def load_adapter(self, path: Union[str, Path], task_id: Optional[str] = None) -> None:
        """Apply an adapter file (of package ``task_id`` if given), or raise before touching any weight."""
        tensors, meta = read_tensor_file(path, kind='adapter')
        own = self.task_state_dict()
        check_task_id(path, meta, task_id)
        check_adapter(path, tensors, meta, self.adapter_metadata(), own, self.frozen_fingerprint())
        for name, tensor in tensors.items():
            own[name].copy_(tensor)
