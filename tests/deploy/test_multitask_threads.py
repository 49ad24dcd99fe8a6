"""Scope-safe multi-task serving (issue 23, item 7): two ``MultiTaskModel`` s of different libraries used from
threads at once. mmengine's default scope is process-wide; before one lock covered every instance, 1 call in
180 built its pipeline in the other library's scope (``KeyError: 'ResizeEdge is not in the mmseg::transform
registry'``)."""
import threading

import pytest
import torch

from petah_mm.deploy import MultiTaskModel
from helpers import TOY_DATA
from helpers.task_models import outputs, write_packages


@pytest.fixture(scope='module')
def servers(toy_workspace, toy_backbone, tmp_path_factory):
    """A classification (mmpretrain) server in merge mode and a segmentation (mmseg) one in routing mode."""
    packages, backbone = write_packages(dict(cls=('cls', 0), seg=('seg', 1)), toy_backbone,
                                        tmp_path_factory.mktemp('thread_packages'))
    image = sorted((toy_workspace / TOY_DATA['coco'] / 'val2017').glob('*.jpg'))[0]
    return dict(cls=MultiTaskModel(backbone, dict(cls=packages['cls']), mode='merge'),
                seg=MultiTaskModel(backbone, dict(seg=packages['seg']), mode='routing')), image


def test_two_multitask_models_serve_from_four_threads(servers):
    servers, image = servers
    expected = {task: outputs(server.predict(task, image)) for task, server in servers.items()}
    calls, errors = [], []

    def worker(order):
        try:
            for _ in range(4):
                for task in order:
                    got = outputs(servers[task].predict(task, image))
                    calls.append(task)
                    assert all(torch.equal(a, b) for a, b in zip(got, expected[task], strict=True)), task
        except Exception as e:  # noqa: BLE001  (reported by the main thread)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(order, ))
               for order in (['cls', 'seg'], ['seg', 'cls'], ['cls'], ['seg'])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, f'{len(errors)} of {len(calls) + len(errors)} calls failed, first: {errors[0]!r}'
    assert len(calls) == 24
