"""The adapted-backbone contract, in one place for every family, subclassed or wrapped.

``AdaptedBackboneMixin`` goes in front of a backbone class, whose ``__init__`` ends with
``self.setup_adapter(adapter)``. The mixin then does all of it:

* finds the target groups: the family's ``adapter_targets`` if it declares them, else
  discovered from the module tree (:mod:`petah_mm.adapters.discovery`), a config's ``targets``
  overriding either per group;
* injects the method's adapters at construction (before the optimizer and DDP see the
  parameters) and freezes everything the method does not train, then runs the host's own
  ``_freeze_stages()`` so that ``frozen_stages`` freezes whole stages, adapters included;
* takes ``norm_eval`` from the method unless the config sets it, keeps BatchNorm statistics
  frozen in ``train()`` (as affine maps that keep no activations for backward);
* lets the task-owned output norms (``norm0``-``norm3``) train under every method;
* re-zeroes the adapters after ``init_weights``, so pretrained weights load first and the
  adapted backbone starts as the pretrained one;
* reads and writes adapter files, merges and unmerges.
"""
import re
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log

from ..utils import NormEvalMixin, convert_frozen_batchnorm
from .conv_mlp import convert_conv_mlps
from .discovery import as_targets, describe_groups, discover_groups, fused_attention
from .factorizations import factorization_class
from .injector import Targets, adapted_layers, inject_adapters, set_trainable, task_parameter_names
from .io import (ADAPTER_LAYOUT, AdapterFileError, check_adapter, check_task_id, file_layout, fingerprint,
                 read_tensor_file, write_tensor_file)
from .layers import ADAPTER_KEY, AdaptedLayerMixin, AdaptedSamePaddingConv2d, is_adapter_key
from .methods import AdapterPlan, build_plan

#: top-level modules of OpenMMLab backbones that normalise each output (mmdet's Swin, mmpretrain's
#: EfficientFormer): fresh for dense tasks, so they belong to each task
OUTPUT_NORM = re.compile(r'norm\d+')


def adapter_record(cfg: dict, layer_ranks: Optional[Dict[str, int]] = None) -> dict:
    """One group's adapter config as a file records it: type, rank, alpha, then the factorization's settings; with
    per-layer ranks, rank None, alpha None where it is each layer's rank, and ``layer_ranks`` (layer -> rank) last.
    A uniform-rank record is the one files had before per-layer ranks existed."""
    settings = factorization_class(cfg['type']).settings()
    alpha = cfg['rank'] if cfg['alpha'] is None else cfg['alpha']
    record = dict(type=cfg['type'], rank=cfg['rank'], alpha=None if alpha is None else float(alpha),
                  **{key: cfg.get(key, default) for key, default in settings.items()})
    if layer_ranks is not None:
        record['layer_ranks'] = dict(layer_ranks)
    return record


class AdaptedBackboneMixin(NormEvalMixin):
    #: target group -> regexes over module names; ``None`` (the default) discovers them
    adapter_targets: Optional[Targets] = None
    arch_name: str

    @property
    def task_owned_prefixes(self) -> List[str]:
        """State-dict prefixes of modules that differ between tasks though no adapter is in them:
        the output norms, which train with the task and are stored with its heads."""
        return [f'{name}.' for name, _ in self.named_children() if OUTPUT_NORM.fullmatch(name)]

    def setup_adapter(self, adapter: dict, targets: Optional[Targets] = None,
                      norm_eval: Optional[bool] = None) -> None:
        self.adapter_cfg = dict(adapter)
        self.target_patterns, self.target_summary = self._find_targets(targets)
        self.adapter_plan = self.fit_plan(build_plan(**adapter))
        self.adapted_groups = inject_adapters(self, self.target_patterns, self.adapter_plan)
        self.task_param_names = task_parameter_names(self, self.target_patterns, self.adapter_plan)
        self.norm_eval = self.adapter_plan.norm_eval if norm_eval is None else norm_eval
        set_trainable(self, [*self.task_param_names, *self.output_norm_param_names()])
        if hasattr(self, '_freeze_stages'):
            self._freeze_stages()
        convert_frozen_batchnorm(self)
        convert_conv_mlps(self)
        norms = self.trainable_output_norms()
        print_log(f'{type(self).__name__}({self.arch_name}): targets {self.target_summary}; '
                  f'{self.adapter_plan.describe()}; '
                  f'{sum(self.trainable_by_group().values()):,} trainable backbone parameters'
                  + (f' (+{norms:,} in the task-owned output norms)' if norms else '')
                  + f', norm_eval={self.norm_eval}', logger='current')

    def _find_targets(self, overrides: Optional[Targets]):
        """Declared or discovered groups, then the config's overrides; and how they were found."""
        if self.adapter_targets is not None:
            declared = dict(self.adapter_targets)
            found = 'declared by ' + type(self).__name__
        else:
            groups, skipped = discover_groups(self)
            declared, found = as_targets(groups), 'discovered: ' + describe_groups(groups, skipped)
        if overrides:
            declared.update({group: list(patterns) for group, patterns in overrides.items()})
            found += f'; overridden by the config: {sorted(overrides)}'
        return declared, found

    def fit_plan(self, plan: AdapterPlan) -> AdapterPlan:
        """The plan for this backbone: PETAH on a CNN is conv LoRA alone; a missing group is a KeyError (the
        transfer study asks it which methods apply to a backbone)."""
        name = type(self).__name__
        if 'attn' in plan.adapters or 'attn' in plan.trainable_groups:
            fused = fused_attention(self)
            if fused and 'attn' not in self.target_patterns:
                raise TypeError(f'{name}: {fused[:3]} are nn.MultiheadAttention, whose q/k/v are one fused '
                                f'in_proj_weight, not layers petah_mm can adapt; method {plan.method!r} needs '
                                'them. Pass targets=dict(attn=[...]) naming Linear layers, or use frozen/full')
        if plan.method == 'petah' and 'attn' not in self.target_patterns and 'conv' in self.target_patterns:
            print_log(f'{name}({self.arch_name}) has no attention layers (a convolution-only backbone): PETAH '
                      'applies its conv LoRA alone', logger='current')
            return replace(plan, adapters={g: c for g, c in plan.adapters.items() if g != 'attn'})
        missing = [g for g in (*plan.adapters, *plan.trainable_groups) if g not in self.target_patterns]
        if missing:
            hint = ('it has no attention layers (a convolution-only backbone?): use petah, frozen or full'
                    if 'attn' in missing else 'pass targets=dict(...) to name its layers')
            raise KeyError(f'method {plan.method!r} needs the target group {missing[0]!r}, but {name} declares '
                           f'only {sorted(self.target_patterns)}; {hint}')
        return plan

    def output_norm_param_names(self) -> List[str]:
        return [name for name, _ in self.named_parameters() if name.startswith(tuple(self.task_owned_prefixes))]

    def trainable_output_norms(self) -> int:
        """Output-norm parameters that train beside the method's own (stored with the heads)."""
        extra = set(self.output_norm_param_names()) - set(self.task_param_names)
        return sum(p.numel() for n, p in self.named_parameters() if p.requires_grad and n in extra)

    def init_weights(self):
        """The host's init (pretrained weights included), then every delta back to zero."""
        super().init_weights()
        self.reset_adapters()

    def plain_backbone_config(self, input_size: Optional[Sequence[int]] = None) -> dict:
        """The adapter-free config a merged checkpoint of this backbone loads into, for inputs of
        ``input_size`` (H, W) if known. A wrapped backbone is its own inner backbone."""
        if not hasattr(self, 'host_cfg'):
            raise NotImplementedError(f'{type(self).__name__} does not say which plain backbone its merged '
                                      'weights load into; override plain_backbone_config()')
        return dict(self.host_cfg, init_cfg=None)

    def trainable_by_group(self) -> Dict[str, int]:
        """Trainable parameters per adapter group, plus ``other`` (own weights that train).

        Their sum is the paper's "#Params": what one task adds to the shared backbone, heads excluded.
        """
        group_of = {layer: group for group, layers in self.adapted_groups.items() for layer in layers}
        counts = {group: 0 for group in self.adapted_groups}
        counts['other'] = 0
        task = set(self.task_param_names)
        for name, param in self.named_parameters():
            if param.requires_grad and name in task:
                layer = name.split(ADAPTER_KEY)[0]
                counts[group_of[layer] if is_adapter_key(name) else 'other'] += param.numel()
        return counts

    def reset_adapters(self) -> None:
        """Zero every delta again: identity with the frozen backbone, whatever ran before."""
        for layer in adapted_layers(self).values():
            layer.reset_adapter()

    def merged_kernels(self) -> Iterator[Tuple[str, torch.Tensor]]:
        """``(layer name, merged kernel)`` of every adapted layer in turn, each checked finite; changes nothing.
        A ValueError names the first layer whose kernel is not finite."""
        for name, layer in adapted_layers(self).items():
            try:
                kernel = layer.merged_kernel()
            except ValueError as e:
                raise ValueError(f'layer {name!r}: {e}') from e
            yield name, kernel

    def merge_adapters(self) -> None:
        """Fold every adapter into its kernel, all or nothing: the kernels are computed and checked first,
        then put in place; if anything fails midway the layers merged so far are unmerged again, so the
        backbone is exactly as before (the frozen kernels are the very tensors it held)."""
        layers = adapted_layers(self)
        done = []
        try:
            for name, kernel in list(self.merged_kernels()):  # every kernel checked before the first is put in place
                layers[name].commit_merge(kernel)
                done.append(layers[name])
        except BaseException:
            for layer in reversed(done):
                layer.unmerge()
            raise

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
        """What an adapter file records and loading checks: per group the factorization, its rank (or each
        layer's) and alpha and every setting of its own, defaults included (a file says what it holds, whatever the
        defaults become)."""
        return dict(
            backbone=type(self).__name__,
            arch=self.arch_name,
            method=self.adapter_plan.method,
            adapters={group: adapter_record(cfg, self.group_layer_ranks(group))
                      for group, cfg in self.adapter_plan.adapters.items()},
            dropout=self.adapter_cfg.get('dropout', 0.),
            layout=ADAPTER_LAYOUT)

    def group_layer_ranks(self, group: str) -> Optional[Dict[str, int]]:
        """The per-layer ranks of ``group``'s adapted layers, or None for the group's one rank."""
        ranks = self.adapter_plan.layer_ranks
        return None if ranks is None else {name: ranks[name] for name in self.adapted_groups[group]}

    def unadapted_by_layout(self, layout: int) -> Dict[str, AdaptedLayerMixin]:
        """The adapted layers that a file of adapter ``layout`` (:data:`.io.ADAPTER_LAYOUT`) holds no tensors
        for: layout 1 predates the adapted same-padding convolutions, which its models left frozen."""
        if layout >= 2:
            return {}
        return {name: layer for name, layer in adapted_layers(self).items()
                if isinstance(layer, AdaptedSamePaddingConv2d)}

    def save_adapter(self, path: Union[str, Path], force: bool = False, task_id: Optional[str] = None) -> int:
        """Write this task's backbone tensors; returns the file size in bytes. An existing file is
        refused unless ``force``; ``task_id`` binds the file to a task package."""
        meta = dict(self.adapter_metadata(), frozen_fingerprint=self.frozen_fingerprint(), task_id=task_id)
        return write_tensor_file(path, self.task_state_dict(), meta, kind='adapter', force=force)

    @torch.no_grad()
    def load_adapter(self, path: Union[str, Path], task_id: Optional[str] = None) -> None:
        """Apply an adapter file (of package ``task_id`` if given), or raise leaving every weight as it was.

        Besides the file checks, every merged kernel must be finite in the model's dtype, so a file
        whose finite factors overflow in their product is refused here, not at the first NaN output.
        A file of adapter layout 1 (:data:`.io.ADAPTER_LAYOUT`) holds no tensors for the TF "same" padding
        convolutions, which its model left frozen: they load as the identity, any other missing tensor is refused."""
        tensors, meta = read_tensor_file(path, kind='adapter')
        own = self.task_state_dict()
        check_task_id(path, meta, task_id)
        unadapted = self.unadapted_by_layout(file_layout(path, meta))
        expected = {name: t for name, t in own.items() if name.split(ADAPTER_KEY)[0] not in unadapted}
        check_adapter(path, tensors, meta, self.adapter_metadata(), expected, self.frozen_fingerprint())
        previous = {name: tensor.clone() for name, tensor in own.items()}
        for name, tensor in tensors.items():
            own[name].copy_(tensor)
        if unadapted:
            # the identity's free factors (LoRA's A) from a seeded CPU generator: loading twice gives one state, and
            # the global one is left alone (layers on a GPU draw from its generator, as building them does)
            with torch.random.fork_rng(devices=[]):
                torch.random.default_generator.manual_seed(0)
                for layer in unadapted.values():
                    layer.reset_adapter()
            names = list(unadapted)
            print_log(f'{path}: adapter layout 1, written before petah_mm adapted TF "same" padding convolutions: '
                      f'{len(names)} layers ({", ".join(names[:3])}{", ..." if len(names) > 3 else ""}) were frozen '
                      'in the model it was trained with, so they load as the identity', logger='current')
        try:  # finite factors can still overflow in their product: such a file is refused, in any mode
            for _ in self.merged_kernels():  # one layer's kernel at a time: no second backbone in memory
                pass
        except ValueError as e:
            for name, tensor in previous.items():
                own[name].copy_(tensor)
            raise AdapterFileError(f'{path}: {e}; the adapter would compute NaN/Inf, so it is refused') from e
