"""mmengine checkpoints resume on torch >= 2.6 with weights_only kept on."""
import sys

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

import petah_mm  # noqa: F401  (allow-lists mmengine's checkpoint globals)
from helpers import run_process


class LineDataset(Dataset):

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(32, 4, generator=g)
        self.y = self.x @ torch.tensor([1., -2., 3., .5]) + 0.1 * torch.randn(32, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(x=self.x[i], y=self.y[i])


class TinyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 1)

    def forward(self, x, y, mode='loss'):
        return dict(loss=(self.fc(x).squeeze(-1) - y).square().mean())


class Crash(Exception):
    pass


class CrashAfterFirstEpoch(Hook):
    """An interruption after epoch 1's checkpoint is written (it runs last)."""
    priority = 'LOWEST'

    def after_train_epoch(self, runner):
        raise Crash


def run(work_dir, resume=False, crash=False):
    torch.manual_seed(0)  # same initial weights in every run
    runner = Runner(
        model=TinyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=LineDataset(), batch_size=4, num_workers=0,
                              collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler', shuffle=True, seed=0)),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1], gamma=0.5),
        train_cfg=dict(by_epoch=True, max_epochs=2),
        custom_hooks=[CrashAfterFirstEpoch()] if crash else [],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1), logger=None),
        randomness=dict(seed=0, deterministic=True),
        resume=resume,
        experiment_name=f'{work_dir.name}-{resume}',
        log_level='WARNING')
    runner.train()
    return {k: v.clone() for k, v in runner.model.state_dict().items()}


def test_resume_matches_an_uninterrupted_run(tmp_path):
    straight = run(tmp_path / 'straight')
    with pytest.raises(Crash):
        run(tmp_path / 'interrupted', crash=True)
    assert (tmp_path / 'interrupted' / 'epoch_1.pth').exists()
    assert not (tmp_path / 'interrupted' / 'epoch_2.pth').exists()
    resumed = run(tmp_path / 'interrupted', resume=True)
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_weights_only_is_still_enforced(tmp_path):
    """Only mmengine's own types were allow-listed: other pickled objects are still refused."""
    path = tmp_path / 'evil.pth'
    torch.save(dict(meta=Crash('not a weight')), path)
    with pytest.raises(Exception, match='weights_only|Unsupported global'):
        torch.load(path)


def test_custom_imports_alone_registers_petah_mm(tmp_path):
    """A config that only says custom_imports=['petah_mm'] builds the backbone in the mmdet scope."""
    config = tmp_path / 'cfg.py'
    config.write_text("custom_imports = dict(imports=['petah_mm'], allow_failed_imports=False)\n"
                      "backbone = dict(type='PETAHEfficientFormer', arch='l1', adapter=dict(method='lora_attn'))\n")
    script = (f"from mmengine.config import Config\nimport sys\nassert 'petah_mm' not in sys.modules\n"
              f"cfg = Config.fromfile({str(config)!r})\n"
              "from mmdet.registry import MODELS\nfrom mmengine.registry import init_default_scope\n"
              "init_default_scope('mmdet')\nprint(type(MODELS.build(cfg.backbone)).__name__)\n")
    proc = run_process([sys.executable, '-c', script], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith('PETAHEfficientFormer')
