"""Train a tiny adapted model with SafeCheckpointHook; optionally SIGKILL itself in the middle of a checkpoint save.

    python tests/helpers/crash_probe.py WORK_DIR MAX_EPOCHS [--resume] [--kill write|cleanup]

``--kill write`` dies once ``epoch_2.pth`` is written to its temporary file but before the rename;
``--kill cleanup`` dies while the superseded ``epoch_1.pth`` is being removed. The data
augmentation draws from Python's, NumPy's and torch's global generators, and the adapter has
dropout, so a resumed run matches an uninterrupted one only if every random state is restored.
"""
import argparse
import os
import random
import signal

import numpy as np
import torch
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader, Dataset

import petah_mm  # noqa: F401  (registers SafeCheckpointHook and the checkpoint loader)
from petah_mm.adapters import adapt_layer


class NoisyDataset(Dataset):

    def __len__(self):
        return 12

    def __getitem__(self, index):
        x = torch.randn(8, generator=torch.Generator().manual_seed(index))
        x = x * (1 + 0.1 * random.random()) + 0.1 * float(np.random.randn()) + 0.1 * torch.rand(8)
        return dict(inputs=x, target=torch.tensor(index % 2))


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = adapt_layer('fc', nn.Linear(8, 2), dict(type='lora', rank=2, dropout=0.3))
        self.fc.weight.requires_grad_(False)
        self.fc.bias.requires_grad_(False)

    def forward(self, inputs, target, mode='tensor'):
        logits = self.fc(inputs)
        return dict(loss=nn.functional.cross_entropy(logits, target)) if mode == 'loss' else logits


def die_when(condition: bool) -> None:
    if condition:
        os.kill(os.getpid(), signal.SIGKILL)


def arm(kill: str) -> None:
    if kill == 'write':
        fsync = os.fsync

        def fsync_then_die(fd):
            die_when(os.path.basename(os.readlink(f'/proc/self/fd/{fd}')).startswith('.epoch_2.pth.'))
            fsync(fd)

        os.fsync = fsync_then_die
    elif kill == 'cleanup':
        remove = os.remove

        def remove_then_die(path, *args, **kwargs):
            die_when(os.path.basename(path) == 'epoch_1.pth')
            remove(path, *args, **kwargs)

        os.remove = remove_then_die


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('work_dir')
    parser.add_argument('max_epochs', type=int)
    parser.add_argument('--resume', action='store_true')
    parser.add_argument('--kill', choices=['write', 'cleanup'])
    args = parser.parse_args()
    arm(args.kill)
    torch.manual_seed(0)  # the model is built before the Runner seeds anything
    runner = Runner(
        model=ToyModel(),
        work_dir=args.work_dir,
        train_dataloader=DataLoader(NoisyDataset(), batch_size=4, shuffle=True, num_workers=0),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1, momentum=0.9)),
        param_scheduler=dict(type='MultiStepLR', milestones=[2], by_epoch=True),
        train_cfg=dict(by_epoch=True, max_epochs=args.max_epochs),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=1),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0),
        resume=args.resume)
    runner.train()


if __name__ == '__main__':
    main()
