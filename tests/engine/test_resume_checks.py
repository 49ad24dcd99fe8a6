"""A resume that cannot continue the same training is refused before the first step, naming the setting or file.

Issue 23's cases: resuming a rank-8 run with ``adapter.rank=4`` logged "resumed epoch: 2" and failed at the first
step; a ``last_checkpoint`` naming a non-checkpoint gave a bare ``IndexError``. Also here: a checkpoint whose
``meta['config']`` mmengine's ``Runner.resume`` would execute as Python.
"""
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.runner import Runner

from petah_mm.engine import CheckpointRefusedError
from petah_mm.engine.resume import META_KEY, adapter_settings, check_resume
from helpers import run_process


def resume_config(work_dir, rank=4, load_from=None) -> Config:
    adapter = dict(method='petah', rank=rank, conv_rank=2)
    return Config(dict(work_dir=str(work_dir), resume=True, load_from=load_from,
                       model=dict(type='ImageClassifier', backbone=dict(type='PETAHEfficientFormer', adapter=adapter),
                                  neck=[dict(type='GAP', adapter=dict(method='lora', rank=1))])))


def training_checkpoint(path, **meta):
    torch.save(dict(state_dict={'w': torch.zeros(2)}, meta=dict(epoch=2, iter=8, **meta)), path)
    return path


def point_last_checkpoint(work_dir, target):
    work_dir.mkdir(exist_ok=True)
    (work_dir / 'last_checkpoint').write_text(str(target))


def test_adapter_settings_are_found_at_any_depth():
    settings = adapter_settings(resume_config('w').model)
    assert settings == {'model.backbone.adapter': dict(method='petah', rank=4, conv_rank=2),
                        'model.neck[0].adapter': dict(method='lora', rank=1)}
    assert all(type(v) is dict for v in settings.values())  # plain data: weights-only loads accept it


def test_changed_adapter_rank_is_refused_naming_the_setting_and_both_values(tmp_path):
    saved = adapter_settings(resume_config(tmp_path, rank=8).model)
    point_last_checkpoint(tmp_path, training_checkpoint(tmp_path / 'epoch_2.pth', **{META_KEY: saved}))
    with pytest.raises(CheckpointRefusedError, match=r"epoch_2\.pth' \(named by .*last_checkpoint\): the config "
                                                     r'changes adapter settings .*model\.backbone\.adapter\.rank: '
                                                     r'checkpoint 8, config 4\)'):
        check_resume(resume_config(tmp_path, rank=4))
    check_resume(resume_config(tmp_path, rank=8))  # the same settings resume


def test_added_or_removed_adapter_settings_are_named(tmp_path):
    saved = adapter_settings(resume_config(tmp_path).model)
    saved['model.backbone.adapter'].pop('conv_rank')
    del saved['model.neck[0].adapter']
    path = training_checkpoint(tmp_path / 'epoch_2.pth', **{META_KEY: saved})
    with pytest.raises(CheckpointRefusedError) as error:
        check_resume(resume_config(tmp_path, load_from=str(path)))
    assert "model.backbone.adapter.conv_rank: checkpoint '(not set)', config 2" in str(error.value)
    assert "model.neck[0].adapter: checkpoint (not set), config {'method': 'lora', 'rank': 1}" in str(error.value)


@pytest.mark.parametrize('target, reason', [
    ('notes.txt', r"refused to load .*notes\.txt': it is not a torch checkpoint"),
    ('missing.pth', r"missing\.pth' does not exist"),
    ('weights.pth', 'it is not a training checkpoint'),
])
def test_last_checkpoint_naming_a_non_checkpoint_is_a_clear_error(tmp_path, target, reason):
    (tmp_path / 'notes.txt').write_text('epoch 2 looked good\n')
    torch.save({'w': torch.zeros(2)}, tmp_path / 'weights.pth')
    point_last_checkpoint(tmp_path, tmp_path / target)
    with pytest.raises(CheckpointRefusedError, match=rf"cannot resume from '.*{target}' \(named by "
                                                     rf'.*last_checkpoint\): .*{reason}'):
        check_resume(resume_config(tmp_path))


def test_no_last_checkpoint_starts_afresh(tmp_path):
    check_resume(resume_config(tmp_path))  # mmengine's behaviour: nothing to resume, nothing refused


def test_checkpoint_whose_meta_config_mmengine_would_execute_is_refused(tmp_path):
    marker = tmp_path / 'PWNED'
    path = training_checkpoint(tmp_path / 'epoch_2.pth', config=f"__import__('pathlib').Path({str(marker)!r}).touch()")
    with pytest.raises(CheckpointRefusedError, match="meta holds 'config', Python text that mmengine"):
        check_resume(resume_config(tmp_path, load_from=str(path)))
    assert not marker.exists()


class Line(BaseModel):

    def __init__(self, outputs=1):
        super().__init__()
        self.fc = torch.nn.Linear(2, outputs)

    def forward(self, x, mode='loss'):
        return dict(loss=self.fc(x).square().mean())


def line_runner(work_dir, outputs, resume):
    data = [dict(x=torch.randn(2)) for _ in range(4)]
    return Runner(model=Line(outputs), work_dir=str(work_dir), experiment_name=f'line-{outputs}-{resume}',
                  train_dataloader=dict(dataset=data, batch_size=2, collate_fn=dict(type='default_collate'),
                                        sampler=dict(type='DefaultSampler', shuffle=False)),
                  optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.1)),
                  train_cfg=dict(by_epoch=True, max_epochs=1 + resume),
                  default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=1), logger=None),
                  resume=resume, log_level='WARNING')


def test_runner_built_directly_refuses_a_checkpoint_of_another_shape_before_any_step(tmp_path):
    """The hook's check: a Runner built without tools/train.py, from a checkpoint without adapter settings."""
    line_runner(tmp_path, outputs=1, resume=False).train()
    runner = line_runner(tmp_path, outputs=3, resume=True)
    before = runner.model.fc.weight.detach().clone()
    with pytest.raises(CheckpointRefusedError, match=r"epoch_1\.pth'.*2 shape mismatches \['fc\.weight: checkpoint "
                                                     r'\(1, 2\), model \(3, 2\)'):
        runner.train()
    assert runner.iter == 0 and torch.equal(runner.model.fc.weight, before)


@pytest.mark.slow
def test_train_tool_refuses_a_resume_with_another_adapter_rank(toy_run, tmp_path):
    """End to end on the session's toy run (rank 8): no "resumed epoch" line, the setting and values named."""
    first = toy_run('cls')
    work = first.copy_to(tmp_path / 'work')
    proc = run_process([sys.executable, 'tools/train.py', first.config, '--work-dir', work, '--resume',
                        '--cfg-options', 'model.backbone.adapter.rank=4', 'train_cfg.max_epochs=3'])
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'resumed epoch' not in output, output[-3000:]
    assert 'model.backbone.adapter.rank: checkpoint 8, config 4' in output, output[-3000:]
    (work / 'last_checkpoint').write_text(str(first.config))
    proc = run_process([sys.executable, 'tools/train.py', first.config, '--work-dir', work, '--resume'])
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'named by' in output and 'not a torch checkpoint' in output, output[-3000:]
