"""All-or-nothing task switches and loads (issue 23, item 2): a package whose adapter factors are finite but
whose products overflow is refused at load in both modes, and a switch whose merge fails midway leaves every
other task and the shared kernels exactly as they were. A task never serves a non-finite score (issue 31,
failure 7): finite tensors whose outputs overflow are refused at load by a probe, in routing and merged mode,
and a non-finite prediction at serve time is an error."""
import shutil

import pytest
import torch

from petah_mm.adapters import AdapterFileError, adapted_layers
from petah_mm.deploy import MultiTaskModel, load_task_package, predict
from petah_mm.deploy.multitask import MODES
from petah_mm.deploy.packages import NonFiniteOutputError
from petah_mm.utils.tensor_file import read_tensor_file, write_tensor_file
from helpers import TOY_DATA
from helpers.task_models import outputs, write_packages

#: finite in float32 (max 3.4e38), but a product of two is 9e38: the merged kernel overflows to Inf
POISON = 3e19


@pytest.fixture(scope='module')
def packages(toy_workspace, toy_backbone, tmp_path_factory):
    """Two classification tasks and a segmentation task on one backbone, and a copy of the first whose adapter
    factors were scaled to POISON (re-signed, so every file check but the delta's passes)."""
    out = tmp_path_factory.mktemp('switch_packages')
    packages, backbone = write_packages(dict(cls=('cls', 0), cls2=('cls', 1), seg=('seg', 2)), toy_backbone, out)
    poisoned = out / 'poisoned'
    shutil.copytree(packages['cls'], poisoned)
    tensors, meta = read_tensor_file(poisoned / 'adapter.safetensors', kind='adapter')
    scaled = {k: v * (POISON / v.abs().max()) if '.adapter.' in k else v for k, v in tensors.items()}
    write_tensor_file(poisoned / 'adapter.safetensors', scaled, meta, kind='adapter', force=True)
    image = sorted((toy_workspace / TOY_DATA['ade20k'] / 'images' / 'validation').glob('*.jpg'))[0]
    return packages, poisoned, backbone, image


def poisoned_copy(package, out, kind, scale_to, selected):
    """A copy of ``package`` whose ``kind`` file's ``selected`` tensors are scaled to a largest value of
    ``scale_to``, re-signed: finite, of the right dtype and shape, so every file check passes."""
    shutil.copytree(package, out)
    tensors, meta = read_tensor_file(out / f'{kind}.safetensors', kind=kind)
    scaled = {k: v / v.abs().max() * scale_to if selected(k) else v for k, v in tensors.items()}  # no overflow
    write_tensor_file(out / f'{kind}.safetensors', scaled, meta, kind=kind, force=True)
    return out


@pytest.fixture(scope='module')
def overflowing(packages, tmp_path_factory):
    """The attack's two packages: adapter factors of 1e15 (every merged kernel finite, about 1e30) and one head
    weight of 3e38."""
    healthy, out = packages[0], tmp_path_factory.mktemp('overflowing')
    return dict(adapter=poisoned_copy(healthy['cls'], out / 'adapter_1e15', 'adapter', 1e15,
                                      lambda k: '.adapter.' in k),
                head=poisoned_copy(healthy['cls'], out / 'head_3e38', 'task', 3e38, lambda k: k == 'head.fc.weight'))


@pytest.mark.parametrize('attack', ['adapter', 'head'])
def test_failure_7_finite_tensors_whose_outputs_overflow_are_refused_at_load(packages, overflowing, attack):
    backbone = packages[2]
    match = rf"{overflowing[attack].name}: output.* holds NaN or Inf in (routing|merged) mode; a task never serves"
    with pytest.raises(NonFiniteOutputError, match=match):
        load_task_package(overflowing[attack], backbone)
    for mode in MODES:
        with pytest.raises(NonFiniteOutputError, match=match):
            MultiTaskModel(backbone, dict(ok=packages[0]['seg'], bad=overflowing[attack]), mode=mode)


def test_failure_7_a_non_finite_prediction_is_an_error_not_a_score(packages):
    healthy, _, backbone, image = packages
    model = load_task_package(healthy['cls'], backbone)
    assert torch.isfinite(predict(model, image).pred_score).all()
    with torch.no_grad():
        model.head.fc.weight[0, 0] = float('nan')  # as a fault in memory would, after the load-time probe
    with pytest.raises(NonFiniteOutputError, match=r"cls: output\['pred_score'\] .* holds NaN or Inf in routing mode"):
        predict(model, image)


@pytest.fixture(scope='module')
def served(packages):
    """The three healthy tasks served in merge mode, and the shared weights as loaded (each test leaves them so)."""
    healthy, _, backbone, _ = packages
    served = MultiTaskModel(backbone, healthy, mode='merge')
    return served, shared_kernels(served)


def shared_kernels(served):
    return {k: v.clone() for k, v in next(iter(served.models.values())).backbone.shared_state_dict().items()}


def assert_bit_identical(state, expected, what):
    differ = [k for k, v in state.items() if not torch.equal(v, expected[k])]
    assert not differ, f'{len(differ)} of {len(expected)} shared tensors differ {what}, e.g. {differ[:3]}'


@pytest.mark.parametrize('mode', MODES)
def test_a_package_whose_delta_overflows_is_refused_at_load(packages, mode):
    healthy, poisoned, backbone, _ = packages
    tensors, _ = read_tensor_file(poisoned / 'adapter.safetensors', kind='adapter')  # every factor is finite
    assert max(v.abs().max().item() for k, v in tensors.items() if '.adapter.' in k) == pytest.approx(POISON)
    match = r"poisoned/adapter.safetensors: layer '[\w.]+': non-finite adapter delta .* in torch.float32"
    with pytest.raises(AdapterFileError, match=match):
        MultiTaskModel(backbone, dict(poisoned=poisoned, seg=healthy['seg']), mode=mode)
    with pytest.raises(AdapterFileError, match=match):
        load_task_package(poisoned, backbone)


@pytest.mark.parametrize('failure', ['kernel', 'commit'])
def test_a_failed_switch_leaves_every_task_and_the_shared_kernels_as_they_were(packages, served, monkeypatch, failure):
    """``cls2``'s merge fails halfway through its layers: while its kernels are computed (what a non-finite layer
    does), or while they are put in place, after earlier layers were already merged."""
    image, (served, loaded) = packages[3], served
    before = {task: outputs(served.predict(task, image)) for task in ('cls', 'seg')}
    assert served.active == 'seg'
    merged_seg = shared_kernels(served)
    layers = list(adapted_layers(served.models['cls2'].backbone).values())
    calls = []

    def fail_midway(original):
        def call(*args):
            calls.append(1)
            if len(calls) == len(layers) // 2:
                raise (ValueError('non-finite adapter delta (forced)') if failure == 'kernel' else
                       MemoryError('forced while committing'))
            return original(*args)
        return call

    method = 'merged_kernel' if failure == 'kernel' else 'commit_merge'
    for layer in layers:
        monkeypatch.setattr(layer, method, fail_midway(getattr(layer, method)))
    with pytest.raises((ValueError, MemoryError), match='forced'):
        served.select('cls2')
    assert len(calls) == len(layers) // 2 and served.active == 'seg'
    assert not served.models['cls2'].backbone.is_merged
    assert_bit_identical(shared_kernels(served), merged_seg, 'from the active task\'s kernels after the failed switch')
    for task, expected in before.items():  # every healthy task predicts exactly what it did before
        for got, want in zip(outputs(served.predict(task, image)), expected, strict=True):
            assert torch.equal(got, want), f'{task}: largest change {(got - want).abs().max().item():.3g}'
    served.models[served.active].backbone.unmerge_adapters()
    served.active = None
    assert_bit_identical(shared_kernels(served), loaded, 'from the loaded weights once unmerged')
