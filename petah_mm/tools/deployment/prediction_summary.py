"""One line of what a task predicted, for ``tools/deployment/multitask_demo.py``: the picture shows it, the line
states it (a classifier's top classes and scores, a segmentor's largest classes by area, a detector's boxes)."""
from typing import Optional, Sequence

import torch

TOP = 3
#: a detector's boxes below this score are left out of the line (mmdet's visualizer draws from 0.3)
DET_SCORE = 0.3


def class_name(classes: Optional[Sequence[str]], label: int) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else f'class {label}'


def summarize(sample, dataset_meta: Optional[dict]) -> str:
    """What ``sample`` (an mmpretrain, mmseg or mmdet data sample) predicts, with the task's class names."""
    classes = (dataset_meta or {}).get('classes')
    if 'pred_score' in sample:
        scores = sample.pred_score.float()
        values, labels = scores.topk(min(TOP, scores.numel()))
        top = ', '.join(f'{class_name(classes, int(i))} {float(v):.3f}' for v, i in zip(values, labels))
        return f'top-{len(labels)}: {top}'
    if 'pred_sem_seg' in sample:
        labels, counts = torch.unique(sample.pred_sem_seg.data, return_counts=True)
        order = counts.argsort(descending=True)[:TOP]
        share = ', '.join(f'{class_name(classes, int(labels[i]))} {100 * float(counts[i]) / float(counts.sum()):.0f} %'
                          for i in order)
        return f'largest classes by area: {share}'
    if 'pred_instances' in sample:
        found = sample.pred_instances[sample.pred_instances.scores >= DET_SCORE]
        order = found.scores.argsort(descending=True)[:TOP]
        boxes = ', '.join(f'{class_name(classes, int(found.labels[i]))} {float(found.scores[i]):.3f}' for i in order)
        return f'{len(found)} boxes of score >= {DET_SCORE}' + (f', the best: {boxes}' if len(found) else '')
    raise TypeError(f'a {type(sample).__name__} holds none of pred_score, pred_sem_seg, pred_instances: not a '
                    'prediction of a classification, segmentation or detection task')
