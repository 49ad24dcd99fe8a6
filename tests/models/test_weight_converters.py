"""The key maps of the real ImageNet weights onto timm: exact (zero missing, zero unexpected keys, same shapes,
every tensor carried over), and the MobileNetV2 map checked against an independent implementation: torchvision's
own model, which the file was written for."""
import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image

from petah_mm.datasets.real_silhouettes import PHOTOS
from petah_mm.engine.package_weights import PACKAGED_WEIGHTS, VARIANTS, timm_state_dict
from petah_mm.models.weight_converters import efficientnet_pytorch_to_timm, stage_block_names
from helpers import assert_close_scaled, reduction_length

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def photo(name, size=224, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)) -> torch.Tensor:
    """A bundled photo, resized and normalised, as a batch of one."""
    image = Image.open(PHOTOS[name].locate()).convert('RGB').resize((size, size), Image.Resampling.BICUBIC)
    x = (torch.from_numpy(np.asarray(image, np.float32)) - torch.tensor(mean)) / torch.tensor(std)
    return x.permute(2, 0, 1)[None]


@pytest.mark.parametrize('variant', VARIANTS)
@pytest.mark.parametrize('name', PACKAGED_WEIGHTS)
def test_converted_weights_are_exactly_the_timm_model(name, variant):
    entry = PACKAGED_WEIGHTS[name]
    state = timm_state_dict(name, variant)
    model = timm.create_model(entry.timm_model, features_only=bool(variant))
    model.load_state_dict(state, strict=True)  # raises on any missing, unexpected or reshaped key
    source = entry.load()
    converted = entry.convert(source, entry.depths)
    ids = {id(t) for t in source.values()}
    assert len(converted) == len(source) and all(id(t) in ids for t in converted.values())  # renamed, not made up
    kept = {k for k in converted if not (variant and k.startswith(VARIANTS[variant]))}
    assert set(state) == kept and all(torch.equal(state[k], converted[k]) for k in kept)


def test_mobilenet_v2_map_agrees_with_torchvision_on_a_real_photo():
    entry = PACKAGED_WEIGHTS['mobilenet-v2']
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(entry.load(), strict=True)
    converted = timm.create_model(entry.timm_model)
    converted.load_state_dict(timm_state_dict('mobilenet-v2'), strict=True)
    x = photo('chelsea.png')
    with torch.no_grad():
        expected, actual = reference.eval()(x), converted.eval()(x)
    assert_close_scaled(actual, expected, reduction_length(reference), msg='timm vs torchvision MobileNetV2')
    assert expected.argmax().item() in IMAGENET_CATS  # the weights are real: Chelsea is a cat


def test_efficientnet_lite0_map_classifies_real_photos():
    model = timm.create_model('tf_efficientnet_lite0')
    model.load_state_dict(timm_state_dict('efficientnet-lite0'), strict=True)
    with torch.no_grad():
        logits = model.eval()(torch.cat([photo(n, mean=(127.5, ) * 3, std=(127.5, ) * 3)
                                         for n in ('chelsea.png', 'coffee.png')]))
    assert logits[0].argmax().item() in IMAGENET_CATS
    assert logits[1].argmax().item() == 967  # espresso


def test_blocks_follow_timm_stage_order():
    assert stage_block_names((1, 2)) == ['blocks.0.0', 'blocks.1.0', 'blocks.1.1']


def test_a_key_the_map_does_not_know_is_an_error_not_dropped():
    with pytest.raises(KeyError, match='_foo.weight'):
        efficientnet_pytorch_to_timm({'_foo.weight': torch.zeros(1)}, (1, ))
    with pytest.raises(KeyError, match='beyond the 1 blocks'):
        efficientnet_pytorch_to_timm({'_blocks.1._bn1.weight': torch.zeros(1)}, (1, ))
