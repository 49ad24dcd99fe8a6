"""One process, one copy of the frozen backbone, several tasks on the same image.

    python tools/deployment/multitask_demo.py --backbone backbone.safetensors \
        --task det=packages/det --task seg=packages/seg --task cls=packages/cls \
        --image demo.jpg --mode merge --out-dir work_dirs/multitask

Each task's prediction is drawn to OUT_DIR/<task>.png and stated in one line (a classifier's top classes with
their scores, a segmentor's largest classes by area, a detector's best boxes); the time of every switch and
inference and the memory the tasks share are printed. In routing mode each task's unmerged forms are first
measured on the image, once per CPU (cached; ``PETAH_MM_UNMERGED_FORMS=flops`` keeps the FLOPs rule), as a
serving process would. The tasks must share one backbone: a package whose
adapter was trained on other frozen weights than the --backbone file's is refused when it loads.
"""
import argparse
import time
from pathlib import Path

import mmcv
from mmengine.registry import VISUALIZERS, DefaultScope

from petah_mm.adapters.form_choice import summary_text
from petah_mm.deploy import MultiTaskModel
from petah_mm.deploy.multitask import MODES
from petah_mm.tools.deployment.multitask_args import task_packages, task_spec
from petah_mm.tools.deployment.prediction_summary import summarize

#: each library's own visualizer: a package's config holds what serving needs, not how to draw
VISUALIZER_TYPES = dict(mmdet='DetLocalVisualizer', mmseg='SegLocalVisualizer', mmpretrain='UniversalVisualizer')


def draw(model, task: str, image_path: Path, sample, out_file: Path) -> None:
    """Draw with the task library's own visualizer (boxes and masks, a label map, or a class)."""
    scope = model.cfg.default_scope
    with DefaultScope.overwrite_default_scope(scope):
        visualizer = VISUALIZERS.build(dict(type=VISUALIZER_TYPES[scope], name=f'petah_multitask_{task}'))
    visualizer.dataset_meta = model.dataset_meta
    image = mmcv.imread(str(image_path), channel_order='rgb')
    if hasattr(visualizer, 'visualize_cls'):  # mmpretrain
        visualizer.visualize_cls(image, sample, draw_gt=False, out_file=str(out_file), show=False)
    else:
        visualizer.add_datasample(task, image, sample, draw_gt=False, show=False, out_file=str(out_file))


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--backbone', required=True, help='shared backbone weights (export_task.py --backbone)')
    parser.add_argument('--task', action='append', required=True, metavar='NAME=PACKAGE', type=task_spec,
                        help='a task package directory (export_task.py); repeat for each task')
    parser.add_argument('--image', required=True, help='the image every task runs on')
    parser.add_argument('--mode', choices=MODES, default='merge',
                        help='merge: fold the active task into the kernels; routing: keep adapters unmerged')
    parser.add_argument('--out-dir', default='work_dirs/multitask', help='where the pictures go')
    parser.add_argument('--runtime', choices=('pytorch', 'onnxruntime'), default='pytorch',
                        help='onnxruntime: serve classification and segmentation tasks from one ONNX backbone graph '
                        '(petah_mm.deploy.onnx.demo; --mode does not apply)')
    args = parser.parse_args(argv)
    try:
        tasks = task_packages(args.task)
    except ValueError as e:
        parser.error(str(e))
    if args.runtime == 'onnxruntime':
        from petah_mm.deploy.onnx.demo import run_onnx_demo
        return run_onnx_demo(args.backbone, tasks, args.image, args.out_dir)
    served = MultiTaskModel(args.backbone, tasks, mode=args.mode)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = next(iter(served.models.values()))
    shared = nbytes(first.backbone.shared_state_dict().values())
    print(f'shared backbone: {shared / 1e6:.1f} MB, held once')
    for task, model in served.models.items():
        own = nbytes(model.backbone.task_state_dict().values()) + nbytes(
            v for k, v in model.state_dict().items() if not k.startswith('backbone.'))
        print(f'  {task}: {model.backbone.adapter_plan.describe()}; its own tensors {own / 1e6:.2f} MB')
    for task in tasks:
        if args.mode == 'routing':
            print(f'{task}: unmerged LoRA {summary_text(served.tune_forms(task, args.image))}')
        start = time.perf_counter()
        model = served.select(task)
        switched = time.perf_counter()
        sample = served.predict(task, args.image)
        done = time.perf_counter()
        if (model.dataset_meta or {}).get('classes'):
            draw(model, task, Path(args.image), sample, out_dir / f'{task}.png')
            drawn = f'-> {out_dir / f"{task}.png"}'
        else:  # the libraries' visualizers need class names
            drawn = ("not drawn: the package names no classes (export_task.py takes them from the checkpoint's "
                     "meta.dataset_meta)")
        print(f'{task}: switch {1e3 * (switched - start):.1f} ms ({args.mode}), inference '
              f'{1e3 * (done - switched):.1f} ms {drawn}')
        print(f'    {summarize(sample, model.dataset_meta)}')


if __name__ == '__main__':
    main()
