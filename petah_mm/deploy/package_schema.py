"""The schema a task package's ``config.json`` is read against: a config is data, not a program.

Round 2 made every *name* in a package config safe, yet the modules the libraries register interpret
their own string arguments (mmdet's ``CameraMotionCompensation`` and mmpretrain's torchvision wrappers
``eval`` one, timm opens ``checkpoint_path`` and downloads ``hf-hub:`` names, mmseg's losses unpickle a
``class_weight`` file). So a package config may hold only what serving a task needs, and every value is
checked against this allow-list before anything is built:

* the top level is exactly ``default_scope``, ``model`` and ``test_dataloader.dataset.pipeline``
  (what :func:`petah_mm.deploy.packages.package_config` writes);
* each key path that holds a module (``model.backbone``, ``model.neck``, a pipeline step, a loss ...)
  has a *slot*: the types allowed there, each with the registry that builds it, resolved in that
  registry's own tables (no import fallback, no name from another registry);
* each type takes the arguments listed for it, each with its value type: numbers in ranges, booleans,
  strings only from per-argument enumerations (timm's ``model_name`` only from ``timm.list_models()``),
  nested modules only of the slot's types; no path argument at all (``init_cfg`` and ``pretrained`` may
  only be null or false: weights come from the package's safetensors files);
* sizes are bounded (:data:`MAX_SIDE`), so a resize, crop or pad cannot allocate without limit.

A user extends it for a head of their own with :func:`register_package_type`, in their own process: an
explicit, local opt-in that no package can carry (a package is JSON and names no code).
"""
import math
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Dict, Iterable, Optional, Sequence, Tuple

from mmengine.registry import Registry

from ..compat import short_text

#: the libraries a task package may come from (its ``default_scope``); registries are looked up in these only
TASK_SCOPES = ('mmdet', 'mmseg', 'mmpretrain')
#: ``mmengine`` holds the root registries the libraries' registries inherit from
LIBRARY_SCOPES = ('mmengine', *TASK_SCOPES)
#: the largest side, in pixels, that any size in a package config (a resize scale, a crop, a pad) may state,
#: and every resize step's output may have when an image is served (:mod:`petah_mm.deploy.pipeline`)
MAX_SIDE = 4096
#: the largest area, in pixels, of a resize step's output: 8.4 M, far above the 2048x512 and 1333x800 of the
#: libraries' largest test scales, and 25 MB as an 8-bit RGB image
MAX_AREA = 2 ** 23
#: characters of an offending value a refusal quotes
QUOTE_CHARS = 200


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for a refusal, at most ``limit`` characters of it."""
    big = isinstance(value, (dict, list, tuple)) and len(value) >= 64
    return f'<{type(value).__name__} of {len(value)} entries>' if big else short_text(repr(value), limit)


def key_of(parent: str, key: Any) -> str:
    return f'{parent}.{quote(key, 64) if not isinstance(key, str) or len(key) > 64 else key}'


class SchemaError(ValueError):
    """A config value the schema refuses: its key path, the value and the rule."""

    def __init__(self, key: str, value: Any, rule: str):
        self.key, self.value, self.rule = key, value, rule
        super().__init__(f'{key}={quote(value)} {rule}')


# ------------------------------------------------------------------------------------------- value specs


class Spec:
    """What one argument may hold."""

    def check(self, value, key: str, scope: str) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Null(Spec):
    """Only ``null``: the argument may be written, but never set (``init_cfg``)."""
    why: str = ''

    def check(self, value, key, scope):
        if value is not None:
            raise SchemaError(key, value, f'must be null in a task package{self.why}')

    def describe(self):
        return 'null'


@dataclass(frozen=True)
class Bool(Spec):
    only: Optional[bool] = None
    why: str = ''

    def check(self, value, key, scope):
        if not isinstance(value, bool) or self.only is not None and value is not self.only:
            expected = 'a boolean' if self.only is None else f'{str(self.only).lower()}{self.why}'
            raise SchemaError(key, value, f'must be {expected}')

    def describe(self):
        return 'boolean' if self.only is None else str(self.only).lower()


@dataclass(frozen=True)
class Int(Spec):
    low: int
    high: int

    def check(self, value, key, scope):
        if not isinstance(value, int) or isinstance(value, bool) or not self.low <= value <= self.high:
            raise SchemaError(key, value, f'must be an integer in [{self.low}, {self.high}]')

    def describe(self):
        return f'integer in [{self.low}, {self.high}]'


@dataclass(frozen=True)
class Float(Spec):
    low: float
    high: float

    def check(self, value, key, scope):
        if (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)
                or not self.low <= value <= self.high):
            raise SchemaError(key, value, f'must be a number in [{self.low:g}, {self.high:g}]')

    def describe(self):
        return f'number in [{self.low:g}, {self.high:g}]'


@dataclass(frozen=True)
class Enum(Spec):
    """One of a few fixed strings (or other constants): the only way a string argument reaches a library."""
    values: Tuple

    def check(self, value, key, scope):
        if not any(value == v and type(value) is type(v) for v in self.values):
            raise SchemaError(key, value, f'must be one of {list(self.values)}')

    def describe(self):
        return f'one of {list(self.values)}'


@dataclass(frozen=True)
class TimmModelName(Spec):
    """An exact architecture name of ``timm.list_models()``: timm reads ``hf-hub:`` and ``local-dir:`` prefixes
    as downloads and file reads, and a pretrained tag (``name.tag``) as a weight source."""

    def check(self, value, key, scope):
        import timm
        if not isinstance(value, str) or value not in set(timm.list_models()):
            raise SchemaError(key, value, 'must be the exact name of a timm architecture (timm.list_models()); timm '
                              'reads other forms, e.g. "hf-hub:..." or "local-dir:...", as a download or a file')

    def describe(self):
        return 'a name of timm.list_models()'


@dataclass(frozen=True)
class Either(Spec):
    options: Tuple[Spec, ...]

    def check(self, value, key, scope):
        errors = []
        for option in self.options:
            try:
                return option.check(value, key, scope)
            except SchemaError as e:
                errors.append((option, e))
        # a dict or list refused by the one option of its kind: that option's error names the deeper key
        same_kind = [e for option, e in errors
                     if isinstance(value, dict) and isinstance(option, (Node, Record, NameTable))
                     or isinstance(value, (list, tuple)) and isinstance(option, Seq)]
        if len(same_kind) == 1:
            raise same_kind[0]
        raise SchemaError(key, value, f'must be {" or ".join(o.describe() for o in self.options)}')

    def describe(self):
        return ' or '.join(o.describe() for o in self.options)


@dataclass(frozen=True)
class Seq(Spec):
    """A list (or a ``{"__tuple__": [...]}`` tuple) of ``low`` to ``high`` items, each an ``item``."""
    item: Spec
    low: int = 1
    high: int = 8

    def check(self, value, key, scope):
        if not isinstance(value, (list, tuple)) or not self.low <= len(value) <= self.high:
            raise SchemaError(key, value, f'must be a list of {self.low} to {self.high} items ({self.item.describe()})')
        for i, item in enumerate(value):
            self.item.check(item, f'{key}[{i}]', scope)

    def describe(self):
        return f'a list of {self.low} to {self.high} ({self.item.describe()})'


@dataclass(frozen=True)
class Record(Spec):
    """A plain dict of known keys (``test_cfg``), none of them a module type."""
    fields: Dict[str, Spec]
    required: Tuple[str, ...] = ()

    def check(self, value, key, scope):
        if not isinstance(value, dict):
            raise SchemaError(key, value, f'must be a dict with keys from {sorted(self.fields)}')
        missing = [k for k in self.required if k not in value]
        if missing:
            raise SchemaError(key, value, f'lacks the keys {missing}')
        for k, v in value.items():
            if k not in self.fields:
                raise SchemaError(key_of(key, k), v, f'is not a key this schema allows here (allowed: '
                                  f'{sorted(self.fields)})')
            self.fields[k].check(v, key_of(key, k), scope)

    def describe(self):
        return f'a dict with keys from {sorted(self.fields)}'


@dataclass(frozen=True)
class NameTable(Spec):
    """A dict from module names (dotted identifiers, as ``named_modules`` gives them) to values of one spec: the
    per-layer ranks of ``petah-budget``. The names reach no library: the backbone matches them to its own layers."""
    value: Spec
    high: int = 4096

    def check(self, value, key, scope):
        if not isinstance(value, dict) or not 1 <= len(value) <= self.high:
            raise SchemaError(key, value, f'must be a dict of 1 to {self.high} layer names')
        for name, item in value.items():
            if not (isinstance(name, str) and 0 < len(name) <= 256
                    and all(part.isidentifier() or part.isdigit() for part in name.split('.'))):
                raise SchemaError(key_of(key, name), item, 'is not a layer name (dotted identifiers and indices)')
            self.value.check(item, key_of(key, name), scope)

    def describe(self):
        return f'a dict of layer names to {self.value.describe()}'


@dataclass(frozen=True)
class Node(Spec):
    """A module config of one slot: ``{"type": <one of the slot's types>, <its arguments>}``."""
    slot: str

    def check(self, value, key, scope):
        check_node(value, key, self.slot, scope)

    def describe(self):
        return f'a {self.slot} config'


@dataclass
class TypeSpec:
    """A type allowed in a slot: the registry that builds it (None: read by name without a registry, as mmcv's
    ``nms`` and RoI layers are), the scopes it may be built in, and its arguments."""
    registry: Optional[str]
    args: Dict[str, Spec]
    scopes: Tuple[str, ...] = TASK_SCOPES
    required: Tuple[str, ...] = ()


#: arguments that name a file or a download source, refused with their reason wherever they appear
PATH_ARGS = {
    'checkpoint': 'loads weights from a file or URL',
    'checkpoint_path': 'makes timm torch.load the file it names',
    'pretrained_cfg': 'names a weight source (timm)',
    'pretrained_cfg_overlay': 'names a weight source or file (timm)',
    'file_client_args': 'names a storage backend and its files',
    'backend_args': 'names a storage backend and its files',
    'ann_file': 'names a file',
    'data_root': 'names a directory',
    'img_path': 'names a file',
}


def check_node(value, key: str, slot: str, scope: str) -> None:
    if not isinstance(value, dict) or not isinstance(value.get('type'), str):
        raise SchemaError(key, value, f'must be a {slot} config: a dict whose "type" is a string')
    name = value['type']
    if '_scope_' in value and value['_scope_'] != scope:
        raise SchemaError(f'{key}._scope_', value['_scope_'], f'must be the package\'s default_scope {scope!r}: a '
                          'package builds every module in its own library')
    spec = SLOTS[slot].get(name)
    if spec is None or scope not in spec.scopes:
        allowed = sorted(n for n, s in SLOTS[slot].items() if scope in s.scopes)
        raise SchemaError(f'{key}.type', name, f'is not a {slot} type a {scope} task package may name at {key} '
                          f'(allowed there: {allowed}; a user extends this with '
                          'petah_mm.deploy.package_schema.register_package_type)')
    if spec.registry is not None and not is_registered_in(spec.registry, name, scope):
        raise SchemaError(f'{key}.type', name, f'is not registered in {scope}\'s {spec.registry} registry, which '
                          'builds it here (mmengine would import the name instead)')
    missing = [k for k in spec.required if k not in value]
    if missing:
        raise SchemaError(key, value, f'lacks the arguments {missing} of {name}')
    for arg, v in value.items():
        if arg in ('type', '_scope_'):
            continue
        where = key_of(key, arg)
        if arg in spec.args:
            spec.args[arg].check(v, where, scope)
        elif arg in PATH_ARGS:
            raise SchemaError(where, v, f'{PATH_ARGS[arg]}; a task package names no file (its weights are its '
                              'safetensors files)')
        else:
            raise SchemaError(where, v, f'is not an argument {name} may take in a task package (allowed: '
                              f'{sorted(spec.args)})')


# ------------------------------------------------------------------------------------------- registries


def library_registry_module(scope: str):
    """The registry module of one of :data:`LIBRARY_SCOPES`, the only modules a check imports by scope name."""
    if scope not in LIBRARY_SCOPES:
        raise ValueError(f'scope {scope!r} is not one of {LIBRARY_SCOPES}; no other registry is imported')
    return import_module(f'{scope}.registry')  # creates the library's child registries


def is_registered_in(registry_name: str, name: str, scope: str) -> bool:
    """Whether ``scope``'s registry ``registry_name`` (``MODELS``, ``TRANSFORMS``, ``TASK_UTILS``) finds ``name``
    without mmengine's import fallback; a ``prefix.Name`` must have a library's prefix."""
    registry = getattr(library_registry_module(scope), registry_name)
    prefix, real_name = Registry.split_scope_key(name)
    if prefix is not None:
        if prefix not in LIBRARY_SCOPES or '.' in real_name:
            return False
        library_registry_module(prefix)
    return find_registered(registry, name)


def find_registered(registry: Registry, key: str) -> bool:
    """``Registry.get(key) is not None`` (mmengine 0.10) minus its fallback imports: the registry, then its
    ancestors, for a plain name; the scope's registry for a scope prefix."""
    registry.import_from_location()  # the library's own module list, as get() does
    scope, real_key = Registry.split_scope_key(key)
    if scope is None or scope == registry.scope:
        if real_key in registry._module_dict:
            return True
        parent = registry.parent if scope is None else None
        while parent is not None:
            if real_key in parent._module_dict:
                return True
            parent = parent.parent
        return False
    if scope in registry._children:
        return find_registered(registry._children[scope], real_key)
    root = registry._get_root_registry()
    return (scope == root.scope or scope in root._children) and find_registered(root, key)


# ------------------------------------------------------------------------------------------- the schema

NONE = Null()
NO_WEIGHTS = Null(': weights come from the package\'s safetensors files, never from a config')
BOOL = Bool()
CHANNELS = Int(1, 8192)
CHANNEL_LIST = Seq(CHANNELS, 1, 8)
CLASSES = Int(1, 100000)
INDICES = Seq(Int(-1, 16), 1, 8)
INDEX_OR_INDICES = Either((Int(-1, 16), INDICES))
SIDE = Int(1, MAX_SIDE)
SIZE = Either((SIDE, Seq(SIDE, 2, 2)))
RATE = Float(0, 1)
REDUCTION = Enum(('none', 'mean', 'sum'))
LOSS_WEIGHT = Float(0, 1e4)
FLOATS = Seq(Float(-1e4, 1e4), 1, 4)
MEAN_STD = Seq(Float(-1e4, 1e4), 1, 4)
STRIDES = Seq(Int(1, 128), 1, 8)
#: the strides of feature maps in pixels, fractional behind a ViT's simple pyramid (14-px patches x 4: 3.5)
MAP_STRIDES = Seq(Float(0.5, 256), 1, 8)
COUNT = Int(-1, 100000)
NORM = Node('norm')
ACT = Either((NONE, Node('act')))
INTERPOLATION = Enum(('nearest', 'bilinear', 'bicubic', 'area', 'lanczos', 'box', 'hamming'))
BACKEND = Enum(('cv2', 'pillow'))
ALIGN = BOOL
META_KEYS = Seq(Enum(('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip', 'flip_direction',
                      'pad_shape', 'reduce_zero_label', 'sample_idx', 'ori_filename', 'filename', 'gt_label',
                      'num_classes', 'keep_ratio')), 1, 16)
ADAPTER_RANK = Int(1, 1024)
_PRESETS = ('frozen', 'full', 'attn-ft', 'lora-attn-r8', 'lora-attn-r16', 'lora-attn-mlp-r8', 'petah1', 'petah2',
            'petah2-dora', 'petah2-lokr')
ADAPTER = Either((Enum(_PRESETS),
                  Record(dict(method=Enum(('frozen', 'full', 'attn_ft', 'lora_attn', 'lora_attn_mlp', 'petah')),
                              rank=Either((NONE, ADAPTER_RANK)), conv_rank=Either((NONE, ADAPTER_RANK)),
                              layer_ranks=Either((NONE, NameTable(ADAPTER_RANK))),
                              budget=Either((NONE, Enum(_PRESETS), Int(1, 10**9))),
                              alpha=Either((NONE, Float(1e-6, 1e6))), dropout=Float(0, 0.999),
                              factorization=Enum(('lora', 'dora', 'loha', 'lokr')), factor=Int(-1, 1024)),
                         required=('method', ))))


def args(*groups: Dict[str, Spec], **more: Spec) -> Dict[str, Spec]:
    out: Dict[str, Spec] = {}
    for group in groups:
        out.update(group)
    out.update(more)
    return out


NO_INIT = dict(init_cfg=NO_WEIGHTS)
CONV_CFGS = dict(conv_cfg=Either((NONE, Node('conv'))), norm_cfg=Either((NONE, NORM)), act_cfg=ACT)

#: slot -> {type name as written -> TypeSpec}
SLOTS: Dict[str, Dict[str, TypeSpec]] = {}


def _slot(name: str, types: Dict[str, TypeSpec]) -> None:
    SLOTS[name] = dict(types)


_slot('norm', {
    n: TypeSpec('MODELS', dict(requires_grad=BOOL, eps=Float(0, 1), momentum=Float(0, 1), affine=BOOL,
                               num_groups=Int(1, 1024)))
    for n in ('BN', 'SyncBN', 'BN2d', 'GN', 'LN', 'IN', 'LN2d')})
_slot('act', {
    **{n: TypeSpec('MODELS', dict(inplace=BOOL)) for n in ('ReLU', 'ReLU6', 'SiLU', 'Swish', 'HSwish', 'HSigmoid',
                                                           'Sigmoid', 'Tanh')},
    'GELU': TypeSpec('MODELS', dict(approximate=Enum(('none', 'tanh')))),
    'LeakyReLU': TypeSpec('MODELS', dict(negative_slope=Float(0, 1), inplace=BOOL)),
})
_slot('conv', {'Conv2d': TypeSpec('MODELS', {}), 'Conv': TypeSpec('MODELS', {})})

# --- backbones: petah_mm's adapted ones, and the plain backbones PETAHBackbone may wrap
_slot('backbone', {
    'PETAHBackbone': TypeSpec('MODELS', args(NO_INIT, backbone=Node('inner_backbone'), adapter=ADAPTER, targets=NONE,
                                             norm_eval=Either((NONE, BOOL))), required=('backbone', )),
    'PETAHEfficientFormer': TypeSpec('MODELS', args(NO_INIT, arch=Enum(('l1', 'l3', 'l7')),
                                                    out_indices=INDEX_OR_INDICES,
                                                    reshape_last_feat=BOOL, frozen_stages=Int(-1, 4),
                                                    norm_eval=Either((NONE, BOOL)), with_cp=BOOL, adapter=ADAPTER,
                                                    targets=NONE, drop_rate=RATE, drop_path_rate=RATE,
                                                    in_channels=Int(1, 16), resolution=Int(1, 64),
                                                    layer_scale_init_value=Float(0, 10))),
})
TIMM_ARGS = args(NO_INIT, model_name=TimmModelName(), features_only=BOOL,
                 pretrained=Bool(False, ': a pretrained timm model downloads its weights when built'),
                 out_indices=INDEX_OR_INDICES, img_size=SIZE, in_channels=Int(1, 16), drop_rate=RATE,
                 drop_path_rate=RATE, output_stride=Enum((8, 16, 32)), dynamic_img_size=BOOL, dynamic_img_pad=BOOL)
SWIN_ARGS = args(NO_INIT, pretrain_img_size=SIZE, in_channels=Int(1, 16), embed_dims=CHANNELS, patch_size=Int(1, 32),
                 window_size=Int(1, 64), mlp_ratio=Float(0.1, 16), depths=STRIDES, num_heads=STRIDES,
                 strides=STRIDES, out_indices=INDICES, qkv_bias=BOOL, qk_scale=Either((NONE, Float(1e-6, 1e3))),
                 patch_norm=BOOL, drop_rate=RATE, attn_drop_rate=RATE, drop_path_rate=RATE,
                 use_abs_pos_embed=BOOL, act_cfg=ACT, norm_cfg=NORM, with_cp=BOOL, pretrained=NO_WEIGHTS,
                 convert_weights=BOOL, frozen_stages=Int(-1, 4))
RESNET_ARGS = args(NO_INIT, CONV_CFGS, depth=Enum((18, 34, 50, 101, 152)), in_channels=Int(1, 16),
                   stem_channels=Either((NONE, CHANNELS)), base_channels=CHANNELS, num_stages=Int(1, 4),
                   strides=STRIDES, dilations=STRIDES, out_indices=INDICES, style=Enum(('pytorch', 'caffe')),
                   deep_stem=BOOL, avg_down=BOOL, frozen_stages=Int(-1, 4), norm_eval=BOOL, with_cp=BOOL,
                   zero_init_residual=BOOL, pretrained=NO_WEIGHTS, contract_dilation=BOOL)
_slot('inner_backbone', {
    'mmpretrain.TIMMBackbone': TypeSpec('MODELS', TIMM_ARGS, required=('model_name', )),
    'mmdet.SwinTransformer': TypeSpec('MODELS', SWIN_ARGS),
    'mmseg.SwinTransformer': TypeSpec('MODELS', SWIN_ARGS),
    'mmdet.ResNet': TypeSpec('MODELS', RESNET_ARGS, required=('depth', )),
    'mmseg.ResNetV1c': TypeSpec('MODELS', RESNET_ARGS, required=('depth', )),
    'mmpretrain.ResNet': TypeSpec('MODELS', args(RESNET_ARGS, expansion=Either((NONE, Int(1, 8))), drop_path_rate=RATE),
                                  required=('depth', )),
    'mmpretrain.MobileViT': TypeSpec('MODELS', args(NO_INIT, CONV_CFGS, arch=Enum(('small', 'x_small', 'xx_small')),
                                                    in_channels=Int(1, 16), stem_channels=CHANNELS,
                                                    last_exp_factor=Int(1, 16), out_indices=INDEX_OR_INDICES,
                                                    frozen_stages=Int(-1, 5), norm_eval=BOOL, with_cp=BOOL)),
})

# --- classification (mmpretrain ImageClassifier)
CLS_LOSS = Node('cls_loss')
_slot('cls_loss', {
    'CrossEntropyLoss': TypeSpec('MODELS', dict(use_sigmoid=BOOL, use_soft=BOOL, reduction=REDUCTION,
                                                loss_weight=LOSS_WEIGHT, class_weight=Either((NONE, FLOATS)),
                                                pos_weight=Either((NONE, FLOATS))), scopes=('mmpretrain', )),
    'LabelSmoothLoss': TypeSpec('MODELS', dict(label_smooth_val=RATE, num_classes=Either((NONE, CLASSES)),
                                               use_sigmoid=Either((NONE, BOOL)),
                                               mode=Enum(('original', 'classy_vision', 'multi_label')),
                                               reduction=REDUCTION, loss_weight=LOSS_WEIGHT,
                                               class_weight=Either((NONE, FLOATS)),
                                               pos_weight=Either((NONE, FLOATS))), scopes=('mmpretrain', )),
})
TOPK = Either((Int(1, 100), Seq(Int(1, 100), 1, 8)))
LINEAR_HEAD = args(NO_INIT, num_classes=CLASSES, in_channels=CHANNELS, loss=CLS_LOSS, topk=TOPK,
                   cal_acc=BOOL)
_slot('cls_neck', {'GlobalAveragePooling': TypeSpec('MODELS', dict(dim=Enum((1, 2, 3))), scopes=('mmpretrain', ))})
_slot('cls_head', {
    'LinearClsHead': TypeSpec('MODELS', LINEAR_HEAD, scopes=('mmpretrain', )),
    'DropoutLinearClsHead': TypeSpec('MODELS', args(LINEAR_HEAD, dropout_rate=Float(0, 0.999)),
                                     scopes=('mmpretrain', )),
})

# --- semantic segmentation (mmseg EncoderDecoder with Semantic FPN)
SEG_LOSS = Node('seg_loss')
_slot('seg_loss', {
    'CrossEntropyLoss': TypeSpec('MODELS', dict(use_sigmoid=BOOL, use_mask=BOOL, reduction=REDUCTION,
                                                loss_weight=LOSS_WEIGHT, loss_name=Enum(('loss_ce', )),
                                                avg_non_ignore=BOOL,
                                                # mmseg loads a str class_weight with np.load / mmengine.load
                                                class_weight=Either((NONE, Seq(Float(0, 1e4), 1, 100000)))),
                                 scopes=('mmseg', )),
})
_slot('fpn_neck', {
    'FPN': TypeSpec('MODELS', args(NO_INIT, in_channels=CHANNEL_LIST, out_channels=CHANNELS, num_outs=Int(1, 8),
                                   start_level=Int(0, 8), end_level=Int(-1, 8),
                                   add_extra_convs=Either((BOOL, Enum(('on_input', 'on_lateral', 'on_output')))),
                                   relu_before_extra_convs=BOOL, no_norm_on_lateral=BOOL,
                                   conv_cfg=Either((NONE, Node('conv'))), norm_cfg=Either((NONE, NORM)), act_cfg=ACT,
                                   upsample_cfg=Record(dict(mode=Enum(('nearest', 'bilinear')),
                                                            scale_factor=Int(1, 8), align_corners=ALIGN))),
                    scopes=('mmdet', 'mmseg')),
    # ViTDet's simple feature pyramid: one map rescaled by each factor (configs/real/_base_/dinov2-vit-s14.py)
    'mmseg.MultiLevelNeck': TypeSpec('MODELS', args(NO_INIT, in_channels=CHANNEL_LIST, out_channels=CHANNELS,
                                                    scales=Seq(Float(0.125, 8), 1, 8),
                                                    norm_cfg=Either((NONE, NORM)), act_cfg=ACT)),
})
#: a neck, or necks run in turn (mmengine builds a list as nn.Sequential): a simple pyramid, then an FPN
NECKS = Either((Node('fpn_neck'), Seq(Node('fpn_neck'), 1, 4)))
_slot('decode_head', {
    'FPNHead': TypeSpec('MODELS', args(NO_INIT, CONV_CFGS, in_channels=Either((CHANNELS, CHANNEL_LIST)),
                                       in_index=INDEX_OR_INDICES, feature_strides=STRIDES, channels=CHANNELS,
                                       dropout_ratio=RATE, num_classes=CLASSES, out_channels=Either((NONE, CHANNELS)),
                                       threshold=Either((NONE, RATE)), align_corners=ALIGN,
                                       input_transform=Either((NONE, Enum(('resize_concat', 'multiple_select')))),
                                       loss_decode=Either((SEG_LOSS, Seq(SEG_LOSS, 1, 4))),
                                       ignore_index=Int(0, 65535)),
                        scopes=('mmseg', ), required=('num_classes', )),
})
SEG_TEST_CFG = Record(dict(mode=Enum(('whole', 'slide')), crop_size=SIZE, stride=SIZE))
SEG_PREPROCESSOR = TypeSpec('MODELS', dict(mean=MEAN_STD, std=MEAN_STD, bgr_to_rgb=BOOL, rgb_to_bgr=BOOL,
                                           pad_val=Float(0, 255), seg_pad_val=Int(0, 255), size=Either((NONE, SIZE)),
                                           size_divisor=Either((NONE, Int(1, 1024)))), scopes=('mmseg', ))

# --- detection and instance segmentation (mmdet Cascade (Mask) R-CNN)
DET_LOSS = Node('det_loss')
_slot('det_loss', {
    'CrossEntropyLoss': TypeSpec('MODELS', dict(use_sigmoid=BOOL, use_mask=BOOL, reduction=REDUCTION,
                                                loss_weight=LOSS_WEIGHT, avg_non_ignore=BOOL,
                                                class_weight=Either((NONE, FLOATS)),
                                                ignore_index=Either((NONE, Int(-1, 255)))),
                                 scopes=('mmdet', )),
    'SmoothL1Loss': TypeSpec('MODELS', dict(beta=Float(0, 1e4), reduction=REDUCTION,
                                            loss_weight=LOSS_WEIGHT), scopes=('mmdet', )),
    'L1Loss': TypeSpec('MODELS', dict(reduction=REDUCTION, loss_weight=LOSS_WEIGHT),
                       scopes=('mmdet', )),
    'FocalLoss': TypeSpec('MODELS', dict(use_sigmoid=BOOL, gamma=Float(0, 100), alpha=RATE,
                                         reduction=REDUCTION, loss_weight=LOSS_WEIGHT),
                          scopes=('mmdet', )),
    **{n: TypeSpec('MODELS', dict(reduction=REDUCTION, loss_weight=LOSS_WEIGHT,
                                  eps=Float(0, 1)), scopes=('mmdet', )) for n in ('GIoULoss', 'IoULoss')},
})
_slot('anchor_generator', {
    'AnchorGenerator': TypeSpec('TASK_UTILS', dict(strides=MAP_STRIDES, ratios=Seq(Float(1e-3, 1e3), 1, 8),
                                                   scales=Either((NONE, Seq(Float(1e-3, 1e3), 1, 8))),
                                                   base_sizes=Either((NONE, MAP_STRIDES)), scale_major=BOOL,
                                                   octave_base_scale=Either((NONE, Int(1, 64))),
                                                   scales_per_octave=Either((NONE, Int(1, 8))),
                                                   centers=NONE, center_offset=RATE), scopes=('mmdet', )),
})
_slot('bbox_coder', {
    'DeltaXYWHBBoxCoder': TypeSpec('TASK_UTILS', dict(target_means=FLOATS, target_stds=FLOATS,
                                                      clip_border=BOOL, add_ctr_clamp=BOOL, ctr_clamp=Int(0, 10000),
                                                      use_box_type=BOOL), scopes=('mmdet', )),
})
#: mmcv's ``batched_nms`` ``eval``s the type: only these exact names, and only in an ``nms`` slot
_slot('nms', {n: TypeSpec(None, dict(iou_threshold=RATE, min_score=Either((NONE, RATE)), sigma=Float(0, 100),
                                     method=Enum(('linear', 'gaussian', 'naive'))), scopes=('mmdet', ))
              for n in ('nms', 'soft_nms')})
#: mmdet reads a RoI layer by ``getattr(mmcv.ops, type)``: only these, and only in a ``roi_layer`` slot
_slot('roi_layer', {
    'RoIAlign': TypeSpec(None, dict(output_size=Either((Int(1, 64), Seq(Int(1, 64), 2, 2))), sampling_ratio=Int(0, 16),
                                    pool_mode=Enum(('avg', 'max')), aligned=BOOL, spatial_scale=Float(0, 1),
                                    use_torchvision=BOOL), scopes=('mmdet', )),
    'RoIPool': TypeSpec(None, dict(output_size=Either((Int(1, 64), Seq(Int(1, 64), 2, 2))), spatial_scale=Float(0, 1)),
                        scopes=('mmdet', )),
})
NMS = Node('nms')
RPN_TEST = Record(dict(nms_pre=COUNT, max_per_img=COUNT, nms=NMS, min_bbox_size=Float(0, 1e4),
                       score_thr=Float(0, 1)))
RCNN_TEST = Record(dict(score_thr=Float(0, 1), nms=NMS, max_per_img=COUNT, mask_thr_binary=Float(-1, 1)))
_slot('rpn_head', {
    'RPNHead': TypeSpec('MODELS', args(NO_INIT, in_channels=CHANNELS, feat_channels=CHANNELS, num_convs=Int(1, 8),
                                       num_classes=Enum((1, )), anchor_generator=Node('anchor_generator'),
                                       bbox_coder=Node('bbox_coder'), reg_decoded_bbox=BOOL, loss_cls=DET_LOSS,
                                       loss_bbox=DET_LOSS), scopes=('mmdet', )),
})
ROI_EXTRACTOR = Node('roi_extractor')
_slot('roi_extractor', {
    'SingleRoIExtractor': TypeSpec('MODELS', args(NO_INIT, roi_layer=Node('roi_layer'), out_channels=CHANNELS,
                                                  featmap_strides=MAP_STRIDES, finest_scale=Int(1, 1024)),
                                   scopes=('mmdet', )),
})
BBOX_HEAD = Node('bbox_head')
_BBOX_HEAD_ARGS = args(NO_INIT, CONV_CFGS, in_channels=CHANNELS, fc_out_channels=CHANNELS, roi_feat_size=Int(1, 64),
                       num_classes=CLASSES, bbox_coder=Node('bbox_coder'), reg_class_agnostic=BOOL,
                       reg_decoded_bbox=BOOL, reg_predictor_cfg=Record(dict(type=Enum(('Linear', )))),
                       cls_predictor_cfg=Record(dict(type=Enum(('Linear', )))), loss_cls=DET_LOSS, loss_bbox=DET_LOSS,
                       with_avg_pool=BOOL, with_cls=BOOL, with_reg=BOOL, num_shared_convs=Int(0, 8),
                       num_shared_fcs=Int(0, 8), num_cls_convs=Int(0, 8), num_cls_fcs=Int(0, 8),
                       num_reg_convs=Int(0, 8), num_reg_fcs=Int(0, 8), conv_out_channels=CHANNELS)
_slot('bbox_head', {n: TypeSpec('MODELS', _BBOX_HEAD_ARGS, scopes=('mmdet', ))
                    for n in ('Shared2FCBBoxHead', 'Shared4Conv1FCBBoxHead', 'ConvFCBBoxHead')})
_slot('mask_head', {
    'FCNMaskHead': TypeSpec('MODELS', args(NO_INIT, CONV_CFGS, num_convs=Int(0, 16), roi_feat_size=Int(1, 64),
                                           in_channels=CHANNELS, conv_kernel_size=Enum((1, 3, 5)),
                                           conv_out_channels=CHANNELS, num_classes=CLASSES, class_agnostic=BOOL,
                                           upsample_cfg=Record(dict(type=Enum(('deconv', 'nearest', 'bilinear')),
                                                                    scale_factor=Int(1, 8))),
                                           predictor_cfg=Record(dict(type=Enum(('Conv', )))), loss_mask=DET_LOSS),
                            scopes=('mmdet', )),
})
_slot('roi_head', {
    'CascadeRoIHead': TypeSpec('MODELS', args(NO_INIT, num_stages=Int(1, 8), stage_loss_weights=FLOATS,
                                              bbox_roi_extractor=Either((ROI_EXTRACTOR, Seq(ROI_EXTRACTOR, 1, 8))),
                                              bbox_head=Either((BBOX_HEAD, Seq(BBOX_HEAD, 1, 8))),
                                              mask_roi_extractor=Either((NONE, ROI_EXTRACTOR)),
                                              mask_head=Either((NONE, Node('mask_head'))), share_roi_extractor=BOOL),
                               scopes=('mmdet', ), required=('num_stages', 'stage_loss_weights')),
})
DET_PREPROCESSOR = TypeSpec('MODELS', dict(mean=MEAN_STD, std=MEAN_STD, bgr_to_rgb=BOOL, rgb_to_bgr=BOOL,
                                           pad_size_divisor=Int(1, 1024), pad_value=Float(0, 255), pad_mask=BOOL,
                                           mask_pad_value=Int(0, 255), pad_seg=BOOL, seg_pad_value=Int(0, 255),
                                           boxtype2tensor=BOOL, non_blocking=BOOL), scopes=('mmdet', ))
CLS_PREPROCESSOR = TypeSpec('MODELS', dict(mean=MEAN_STD, std=MEAN_STD, to_rgb=BOOL, pad_size_divisor=Int(1, 1024),
                                           pad_value=Float(0, 255), num_classes=Either((NONE, CLASSES)),
                                           to_onehot=BOOL, non_blocking=BOOL,
                                           batch_augments=NONE),  # ImageClassifier writes its train_cfg's here
                            scopes=('mmpretrain', ))
_slot('data_preprocessor', {'DetDataPreprocessor': DET_PREPROCESSOR, 'SegDataPreProcessor': SEG_PREPROCESSOR,
                            'ClsDataPreprocessor': CLS_PREPROCESSOR})

_slot('model', {
    'ImageClassifier': TypeSpec('MODELS', args(NO_INIT, backbone=Node('backbone'),
                                               neck=Either((NONE, Node('cls_neck'))), head=Node('cls_head'),
                                               data_preprocessor=Node('data_preprocessor'), pretrained=NO_WEIGHTS),
                                scopes=('mmpretrain', ), required=('backbone', 'head')),
    'EncoderDecoder': TypeSpec('MODELS', args(NO_INIT, backbone=Node('backbone'), neck=Either((NONE, NECKS)),
                                              decode_head=Node('decode_head'), test_cfg=SEG_TEST_CFG,
                                              data_preprocessor=Node('data_preprocessor'), pretrained=NO_WEIGHTS),
                               scopes=('mmseg', ), required=('backbone', 'decode_head')),
    'CascadeRCNN': TypeSpec('MODELS', args(NO_INIT, backbone=Node('backbone'), neck=NECKS,
                                           rpn_head=Node('rpn_head'), roi_head=Node('roi_head'),
                                           test_cfg=Record(dict(rpn=RPN_TEST, rcnn=RCNN_TEST),
                                                           required=('rpn', 'rcnn')),
                                           data_preprocessor=Node('data_preprocessor')),
                            scopes=('mmdet', ), required=('backbone', 'neck', 'rpn_head', 'roi_head', 'test_cfg')),
})

# --- the test pipeline (built by each library's TRANSFORMS)
RESIZE_ARGS = dict(scale=SIZE, keep_ratio=BOOL, clip_object_border=BOOL, backend=BACKEND,
                   interpolation=INTERPOLATION)
_slot('transform', {
    'LoadImageFromFile': TypeSpec('TRANSFORMS', dict(to_float32=BOOL,
                                                     color_type=Enum(('color', 'grayscale', 'unchanged')),
                                                     imdecode_backend=BACKEND, ignore_empty=BOOL)),
    'Resize': TypeSpec('TRANSFORMS', RESIZE_ARGS, required=('scale', )),
    'ResizeEdge': TypeSpec('TRANSFORMS', dict(scale=SIDE, edge=Enum(('short', 'long', 'width', 'height')),
                                              backend=BACKEND, interpolation=INTERPOLATION),
                           scopes=('mmpretrain', ), required=('scale', )),
    'CenterCrop': TypeSpec('TRANSFORMS', dict(crop_size=SIZE, auto_pad=BOOL, pad_cfg=Record(dict(
        type=Enum(('Pad', )))), clip_object_border=BOOL), scopes=('mmpretrain', ), required=('crop_size', )),
    'LoadAnnotations': TypeSpec('TRANSFORMS', dict(with_bbox=BOOL, with_label=BOOL, with_mask=BOOL, with_seg=BOOL,
                                                   poly2mask=BOOL, box_type=Enum(('hbox', )),
                                                   reduce_zero_label=Either((NONE, BOOL)),
                                                   imdecode_backend=BACKEND),
                                scopes=('mmdet', 'mmseg')),
    'PackInputs': TypeSpec('TRANSFORMS', dict(meta_keys=META_KEYS), scopes=('mmpretrain', )),
    'PackSegInputs': TypeSpec('TRANSFORMS', dict(meta_keys=META_KEYS), scopes=('mmseg', )),
    'PackDetInputs': TypeSpec('TRANSFORMS', dict(meta_keys=META_KEYS), scopes=('mmdet', )),
})

#: the whole config: nothing but what serving and evaluating the task need
TOP_LEVEL = Record(dict(default_scope=Enum(TASK_SCOPES), model=Node('model'),
                        test_dataloader=Record(dict(dataset=Record(dict(pipeline=Seq(Node('transform'), 1, 16)),
                                                                   required=('pipeline', ))),
                                               required=('dataset', ))),
                   required=('default_scope', 'model', 'test_dataloader'))


def check_package_config(config: dict) -> None:
    """Raise :class:`SchemaError` at the first key path the schema refuses; builds and imports nothing but the
    libraries' registries (and timm's model list, for a timm backbone)."""
    if not isinstance(config, dict):
        raise SchemaError('config', config, 'must be a dict')
    scope = config.get('default_scope')
    Enum(TASK_SCOPES).check(scope, 'config.default_scope', None)
    TOP_LEVEL.check(config, 'config', scope)


def register_package_type(slot: str, type_name: str, arguments: Dict[str, Spec], registry: Optional[str] = 'MODELS',
                          scopes: Iterable[str] = TASK_SCOPES, required: Sequence[str] = ()) -> None:
    """Allow ``type_name`` with ``arguments`` (name -> :class:`Spec`) at every key path of ``slot`` in the task
    packages this process reads: the explicit, local opt-in for a module of the caller's own, e.g.

        register_package_type('cls_head', 'MyHead', dict(in_channels=Int(1, 8192), num_classes=Int(1, 1000)))

    It holds for this process only; a package is JSON and cannot register anything. A type that writes
    files, reads files or interprets strings must not be given string or path arguments."""
    if slot not in SLOTS:
        raise KeyError(f'unknown package-config slot {slot!r}; the slots are {sorted(SLOTS)}')
    unknown = sorted(set(scopes) - set(TASK_SCOPES))
    if unknown:
        raise ValueError(f'scopes {unknown} are not task scopes; choose from {TASK_SCOPES}')
    bad = sorted(k for k, v in arguments.items() if not isinstance(v, Spec))
    if bad:
        raise TypeError(f'arguments {bad} of {type_name} need a Spec (Int, Float, Bool, Enum, Seq, Record, Node ...)')
    SLOTS[slot][type_name] = TypeSpec(registry, dict(arguments), tuple(scopes), tuple(required))


__all__ = ['MAX_SIDE', 'MAX_AREA', 'SchemaError', 'Spec', 'Null', 'Bool', 'Int', 'Float', 'Enum', 'Either', 'Seq',
           'Record', 'Node', 'TimmModelName', 'TypeSpec', 'SLOTS', 'check_package_config', 'register_package_type',
           'quote']
