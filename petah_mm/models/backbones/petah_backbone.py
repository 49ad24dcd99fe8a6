"""``PETAHBackbone``: any registered backbone, adapted by one ``adapter=dict(method=...)`` argument.

    backbone=dict(type='PETAHBackbone',
                  backbone=dict(type='mmdet.SwinTransformer', ...),   # any registered backbone
                  adapter=dict(method='petah', rank=8, conv_rank=2),
                  targets=None)   # or dict(attn=[regex, ...], mlp=[...], conv=[...])

The result is an instance of the inner backbone's own class with :class:`AdaptedBackboneMixin` in
front (``PETAHSwinTransformer``), not a module around it: state-dict keys, ``init_cfg``,
``frozen_stages``, ``norm_eval``, ``out_indices`` and ``train()`` are the inner backbone's, and a
merged checkpoint loads into the plain inner backbone without petah_mm. Pooling token mixers
(PoolFormer's, EfficientFormer's) run as box filters on the CPU (:mod:`.box_pooling`).
"""
import inspect
from typing import Dict, Optional, Type, Union

from mmengine.config import ConfigDict
from mmengine.registry import MODELS, DefaultScope
from torch import nn

from ...adapters import AdaptedBackboneMixin, preset
from ...adapters.injector import Targets
from .box_pooling import convert_pooling_token_mixers

_ADAPTED: Dict[type, type] = {}
#: constructor arguments that tell two variants of one backbone class apart in adapter files
ARCH_KEYS = ('arch', 'model_name', 'depth')


def backbone_class(type_name: Union[str, type]) -> Type[nn.Module]:
    """The class a backbone config names; an unscoped name is looked up in the current default scope."""
    if inspect.isclass(type_name):
        return type_name
    scope = DefaultScope.get_current_instance()
    key = type_name if '.' in type_name or scope is None else f'{scope.scope_name}.{type_name}'
    cls = MODELS.get(key)
    if cls is None:
        raise KeyError(f'PETAHBackbone: backbone type {type_name!r} is not registered (looked up {key!r}); '
                       "give it with its library's scope, e.g. 'mmdet.SwinTransformer' or 'mmpretrain.TIMMBackbone'")
    if not inspect.isclass(cls) or not issubclass(cls, nn.Module):
        raise TypeError(f'PETAHBackbone: {type_name!r} is registered as {cls!r}, not as a backbone class')
    return cls


def adapted_class(host: Type[nn.Module]) -> type:
    """``PETAH<Host>``: the host class with the adapter contract in front, made once per host."""
    if issubclass(host, AdaptedBackboneMixin):
        raise TypeError(f'{host.__name__} is already an adapted backbone; give its plain backbone to PETAHBackbone')
    if host not in _ADAPTED:

        def __init__(self, adapter: dict, targets: Optional[Targets] = None, explicit_norm_eval: Optional[bool] = None,
                     host_cfg: Optional[dict] = None, **kwargs):
            host.__init__(self, **kwargs)
            convert_pooling_token_mixers(self)
            self.host_cfg = dict(host_cfg or dict(type=host), **kwargs)
            arch = [f'{key}={kwargs[key]}' for key in ARCH_KEYS if key in kwargs]
            self.arch_name = f'{self.host_cfg["type"]}' + (f'({", ".join(arch)})' if arch else '')
            self.setup_adapter(adapter, targets, explicit_norm_eval)

        _ADAPTED[host] = type(f'PETAH{host.__name__}', (AdaptedBackboneMixin, host),
                              dict(__init__=__init__, __module__=__name__,
                                   __doc__=f'{host.__name__} adapted by petah_mm (see PETAHBackbone).'))
    return _ADAPTED[host]


@MODELS.register_module(name='PETAHBackbone')
def build_petah_backbone(backbone: dict, adapter: Union[dict, str] = 'petah2', targets: Optional[Targets] = None,
                         norm_eval: Optional[bool] = None, init_cfg: Optional[dict] = None) -> nn.Module:
    """Build ``backbone`` adapted by ``adapter`` (a dict or a preset name such as ``'petah2'``).

    ``norm_eval`` (here or in the inner config) overrides what the method implies. ``targets``
    replaces the discovered layers of the groups it names.
    """
    if init_cfg is not None:
        raise ValueError(f'PETAHBackbone: init_cfg={init_cfg} belongs to the inner backbone (backbone=dict(..., '
                         'init_cfg=...)), which loads it before the adapters are zeroed')
    inner = dict(backbone)
    if 'type' not in inner:
        raise KeyError("PETAHBackbone: backbone=dict(...) needs a 'type', e.g. type='mmdet.ResNet'")
    type_name = inner.pop('type')
    adapter = preset(adapter) if isinstance(adapter, str) else adapter
    host = backbone_class(type_name)
    if norm_eval is not None and 'norm_eval' in inspect.signature(host.__init__).parameters:
        inner['norm_eval'] = norm_eval  # the host's own switch, if it has one, agrees with ours
    explicit = norm_eval if norm_eval is not None else inner.get('norm_eval')
    host_cfg = dict(type=type_name if isinstance(type_name, str) else type_name.__name__)
    return adapted_class(host)(adapter=adapter, targets=targets, explicit_norm_eval=explicit, host_cfg=host_cfg,
                               **inner)


def pretrained_checkpoint(backbone_cfg: dict) -> Optional[str]:
    """The checkpoint that a backbone config's ``init_cfg=dict(type='Pretrained')`` loads (the inner
    backbone's, for a PETAHBackbone), or None."""
    init_cfg = _weights_owner(backbone_cfg).get('init_cfg')
    return init_cfg.get('checkpoint') if _is_pretrained(init_cfg) else None


def with_pretrained(backbone_cfg: dict, checkpoint: Optional[str]) -> dict:
    """A backbone config whose only weights are ``checkpoint``, loaded by its Pretrained ``init_cfg`` (the
    inner backbone's, for a PETAHBackbone; other keys of the config's one, such as ``prefix``, stay), or
    no weights at all for None; never the backbone's own ``pretrained`` switch (timm's and
    ``mmpretrain.TIMMBackbone``'s ``pretrained=True`` downloads when the model is built; older
    backbones take a checkpoint path there), wrapped or plain."""
    wrapped = backbone_cfg.get('type') == 'PETAHBackbone'
    owner = dict(_weights_owner(backbone_cfg))
    if checkpoint is not None:
        init_cfg = owner.get('init_cfg')
        # a ConfigDict, as from a config file: mmdet's SwinTransformer reads init_cfg.checkpoint
        owner['init_cfg'] = ConfigDict(init_cfg if _is_pretrained(init_cfg) else dict(type='Pretrained'),
                                       checkpoint=checkpoint)
    else:
        owner['init_cfg'] = None
    if 'pretrained' in owner:
        owner['pretrained'] = False if isinstance(owner['pretrained'], bool) else None
    return dict(backbone_cfg, init_cfg=None, backbone=owner) if wrapped else owner


def without_pretrained(backbone_cfg: dict) -> dict:
    """A backbone config that loads no weights: no ``init_cfg``, and no ``pretrained`` download (timm's
    ``pretrained=True``), of the inner backbone of a PETAHBackbone or of a plain one. Every writer of a
    config whose weights come from elsewhere (a checkpoint, a task package) goes through this."""
    return with_pretrained(backbone_cfg, None)


def _weights_owner(backbone_cfg: dict) -> dict:
    """The config whose ``init_cfg`` loads the weights: the inner backbone of a PETAHBackbone."""
    return backbone_cfg['backbone'] if backbone_cfg.get('type') == 'PETAHBackbone' else backbone_cfg


def _is_pretrained(init_cfg) -> bool:
    return isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained'


def build_backbone_from_config(cfg, preset_name: Optional[str] = None, checkpoint: Optional[str] = None,
                               **adapter_overrides) -> nn.Module:
    """The adapted backbone of a model config (a path or a Config), built in its default scope without
    pretrained weights, or with ``checkpoint`` as the weights its ``init_weights()`` loads;
    ``preset_name`` (e.g. ``'petah2'``) or ``adapter_overrides`` switch its method."""
    from mmengine.config import Config
    cfg = cfg if isinstance(cfg, Config) else Config.fromfile(cfg)
    backbone = with_pretrained(cfg.model.backbone, checkpoint)
    if preset_name is not None or adapter_overrides:
        adapter = backbone.get('adapter', {})
        adapter = dict(preset(adapter) if isinstance(adapter, str) else adapter)
        adapter.update(preset(preset_name) if preset_name else {}, **adapter_overrides)
        backbone['adapter'] = adapter
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        return MODELS.build(backbone)
