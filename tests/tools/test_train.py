"""tools/train.py and tools/test.py end to end on the toy tasks, as a user runs them: train, resume, test, a
seeded run repeated exactly, a quiet log, and distributed training on the CPU.

The first training run of each task is the session's shared one (``toy_run``); resuming happens in a copy.
"""
import re
import sys

import pytest
import torch

from petah_mm.tools.studies.hparam_grid import final_metric
from helpers import DET_TEST_OPTIONS, REPO, SEG_TOY, run, run_process

pytestmark = pytest.mark.slow


def test_detection_train_resume_test(toy_run, tmp_path):
    first = toy_run('det')
    assert (first.work_dir / 'epoch_1.pth').exists() and 'Epoch(train) [1]' in first.log
    work = first.copy_to(tmp_path / 'work')
    resumed = run('tools/train.py', first.config, '--work-dir', work, '--resume',
                  '--cfg-options', 'train_cfg.max_epochs=2', *DET_TEST_OPTIONS)
    assert 'resumed epoch: 1' in resumed
    assert 'Epoch(train) [2]' in resumed and 'Epoch(train) [1]' not in resumed
    ckpt = torch.load(work / 'epoch_2.pth', map_location='cpu')  # weights_only: petah_mm's allow-list
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4
    # after 4 iterations no score passes the usual 0.05; keep every box so COCO eval has input
    out = run('tools/test.py', first.config, work / 'epoch_2.pth', '--work-dir', tmp_path / 'test',
              '--cfg-options', *DET_TEST_OPTIONS)
    assert re.search(r'coco/bbox_mAP: \d', out) and re.search(r'coco/segm_mAP: \d', out)


def test_segmentation_train_resume_test(toy_run, tmp_path):
    first = toy_run('seg')
    assert (first.work_dir / 'iter_2.pth').exists()
    work = first.copy_to(tmp_path / 'work')
    resumed = run('tools/train.py', first.config, '--work-dir', work, '--resume',
                  '--cfg-options', 'train_cfg.max_iters=4', 'train_cfg.val_interval=4',
                  'default_hooks.checkpoint.interval=2')
    assert 'resumed epoch: 0, iter: 2' in resumed and 'Iter(train) [4/4]' in resumed
    assert 'Iter(train) [1/4]' not in resumed
    out = run('tools/test.py', first.config, work / 'iter_4.pth', '--work-dir', tmp_path / 'test')
    assert re.search(r'mIoU: \d', out)


def test_toy_training_resumes_and_tests_from_its_checkpoint(toy_run, tmp_path):
    first = toy_run('cls')
    assert 'Epoch(train) [2][4/4]' in first.log and (first.work_dir / 'epoch_2.pth').exists()
    assert re.search(r'Epoch\(val\) \[2\]\[2/2\] +accuracy/top1: \d', first.log)
    work = first.copy_to(tmp_path / 'work')
    resumed = run('tools/train.py', first.config, '--work-dir', work, '--resume',
                  '--cfg-options', 'train_cfg.max_epochs=3')
    assert 'resumed epoch: 2, iter: 8' in resumed
    assert 'Epoch(train) [3][4/4]' in resumed and 'Epoch(train) [1]' not in resumed
    checkpoint = torch.load(work / 'epoch_3.pth', map_location='cpu')
    assert (checkpoint['meta']['epoch'], checkpoint['meta']['iter']) == (3, 12)
    accuracy = final_metric(work, 'accuracy/top1', 3)
    assert accuracy > 50  # four classes: chance is 25 %

    tested = run('tools/test.py', first.config, work / 'epoch_3.pth', '--work-dir', tmp_path / 'test')
    top1 = re.search(r'Epoch\(test\) \[2/2\] +accuracy/top1: ([\d.]+)', tested)
    assert top1 and float(top1[1]) == pytest.approx(accuracy, abs=1e-3)


def test_toy_training_log_has_no_per_tensor_warnings(toy_run):
    log = toy_run('cls').log
    warnings = [line for line in log.splitlines() if ' - WARNING - ' in line]
    assert not [line for line in warnings if 'requires_grad' in line or 'paramwise_options' in line]
    assert len(warnings) <= 3, '\n'.join(warnings)  # what remains comes from the libraries' own startup
    summary = [line for line in log.splitlines() if 'optimizer: ' in line]
    assert len(summary) == 1 and re.search(r'backbone adapters [\d,]+ \(lr x1\), backbone own weights [\d,]+.*, '
                                           r'neck and heads [\d,]+ \(lr x1\); [\d,]+ frozen', summary[0]), summary


def test_seeded_toy_training_repeats_exactly(toy_run, tmp_path):
    """Same seed, deterministic algorithms: the logged losses, the accuracy and every weight agree exactly."""
    def numbers(log):
        losses = re.findall(r'Epoch\(train\) +\[[12]\]\[\d/4\].* loss: ([\d.]+)', log)
        accuracy = re.findall(r'Epoch\(val\) \[2\]\[2/2\] +accuracy/top1: ([\d.]+)', log)
        assert len(losses) == 8 and len(accuracy) == 1, log[-3000:]
        return losses, accuracy

    first = toy_run('cls')
    second = run('tools/train.py', first.config, '--work-dir', tmp_path / 'second', '--cfg-options',
                 'train_cfg.max_epochs=2')
    assert 'seed: 0' in first.log
    assert numbers(first.log) == numbers(second)
    first_state, second_state = (torch.load(path / 'epoch_2.pth', map_location='cpu')['state_dict']
                                 for path in (first.work_dir, tmp_path / 'second'))
    assert first_state.keys() == second_state.keys()
    assert all(torch.equal(first_state[k], second_state[k]) for k in first_state)


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_train_on_cpu_keeps_ranks_identical(toy_config, tmp_path):
    """torchrun, 2 processes, gloo: frozen parameters must not upset DDP, and ranks must agree."""
    config = toy_config(SEG_TOY, tmp_path / 'toy_user_config.py', batch_size=2,
                        default_hooks=dict(logger=dict(interval=1)),
                        custom_imports=dict(imports=['petah_mm', 'helpers.dist_probe'], allow_failed_imports=False),
                        custom_hooks=[dict(type='DumpTaskStateHook')])
    work = tmp_path / 'work'
    proc = run_process(
        ['bash', 'tools/dist_train.sh', config, '2', '--work-dir', work, '--cfg-options', 'train_cfg.max_iters=3',
         'train_cfg.val_interval=3', 'default_hooks.checkpoint.interval=3'],
        env=dict(PYTHON=sys.executable, PORT=str(free_port()), PYTHONPATH=str(REPO / 'tests')))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert 'Distributed training: True' in proc.stdout and 'GPU number: 2' in proc.stdout  # 2 gloo ranks
    ranks = [torch.load(work / f'task_state_rank{r}.pt') for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    for name in ranks[0]:
        assert torch.equal(ranks[0][name], ranks[1][name]), f'ranks disagree on {name}'
    trained_b = [v for k, v in ranks[0].items() if k.endswith('adapter.lora_B')]
    assert trained_b and all(torch.count_nonzero(b) > 0 for b in trained_b), 'adapters did not train'
