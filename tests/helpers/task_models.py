"""Toy task models and packages on the session's toy backbone, for the deployment tests."""
from mmengine.config import Config

from petah_mm.deploy import build_task_model, export_shared_backbone, export_task_package
from petah_mm.testing import randomise_adapters
from . import CLS_TOY, DET_TOY, SEG_TOY

TOY_CONFIGS = dict(det=DET_TOY, seg=SEG_TOY, cls=CLS_TOY)


def trained_model(task, backbone_ckpt, seed=0, cfg=None):
    """A task model on the toy backbone (or ``cfg``'s), with random adapter values standing in for training."""
    if cfg is None:
        cfg = Config.fromfile(TOY_CONFIGS[task])
        cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(backbone_ckpt))
    model = build_task_model(cfg)
    model.init_weights()
    randomise_adapters(model.backbone, seed=seed, std=0.05)
    return cfg, model.eval()


def write_packages(tasks, backbone_ckpt, out):
    """``{name: package}`` for ``tasks`` (``{name: (toy task, seed)}``) and the shared backbone file they load."""
    packages = {}
    for name, (task, seed) in tasks.items():
        cfg, model = trained_model(task, backbone_ckpt, seed=seed)
        export_task_package(model, cfg, out / name)
        packages[name] = out / name
    export_shared_backbone(model, out / 'backbone.safetensors')
    return packages, out / 'backbone.safetensors'


def outputs(sample):
    """The tensors a task predicts, whatever the library."""
    if 'pred_instances' in sample:
        return [sample.pred_instances.bboxes, sample.pred_instances.scores]
    if 'seg_logits' in sample:
        return [sample.seg_logits.data]
    return [sample.pred_score]
