import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture
def build_ef():
    """Build a PETAH EfficientFormer with small defaults; keyword arguments override."""
    from petah_mm.models import PETAHEfficientFormer

    def build(method='petah', arch='l1', **kwargs):
        adapter = dict(method=method, conv_rank=2)
        adapter.update(kwargs.pop('adapter', {}))
        return PETAHEfficientFormer(arch=arch, adapter=adapter, **kwargs)

    return build
