"""Real inputs for an exported graph: dataset images through the task's own pipeline and data preprocessor.

The graph's input is what the model's data preprocessor hands the network (mmdeploy's convention):
the normalised, batched image tensor. Calibration and verification take their images from the
config's datasets and pass them through the test pipeline (deterministic, so a graph of fixed size
sees what inference will see), then through ``model.data_preprocessor``. An input smaller than the
graph's size is padded at the bottom and right with zeros, which is what the detection and
segmentation preprocessors themselves do after normalising; a larger one is refused.
"""
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import DATASETS, DefaultScope
from torch import nn

SPLITS = ('train', 'val', 'test')


def dataset_with_test_pipeline(cfg: Config, split: str):
    """``split``'s dataset of ``cfg``, its images loaded by the test pipeline (annotations kept)."""
    if split not in SPLITS:
        raise ValueError(f'unknown split {split!r}; choose one of {SPLITS}')
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        raise KeyError(f'the config has no {split}_dataloader; the ONNX tools take their images from it')
    dataset_cfg = Config(dict(loader['dataset'])).to_dict()
    dataset_cfg['pipeline'] = cfg.test_dataloader.dataset.pipeline
    dataset_cfg.pop('indices', None)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return DATASETS.build(dataset_cfg)


def fit_to_shape(inputs: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    """``inputs`` (N, C, h, w) zero-padded at the bottom and right to ``shape`` (H, W)."""
    height, width = inputs.shape[-2:]
    if height > shape[0] or width > shape[1]:
        raise ValueError(f'a pipeline input of {height}x{width} does not fit the graph size {shape[0]}x{shape[1]}; '
                         'export with a larger --shape H W (at least the largest test input)')
    return F.pad(inputs, (0, shape[1] - width, 0, shape[0] - height))


@torch.no_grad()
def pipeline_batches(cfg: Config, model: nn.Module, split: str, num_images: int,
                     shape: Optional[Tuple[int, int]] = None, batch_size: int = 1) -> Iterator[dict]:
    """Up to ``num_images`` images of ``split`` as ``dict(inputs, data_samples)``, as the preprocessor
    returns them at test time, ``inputs`` fitted to ``shape`` if given."""
    dataset = dataset_with_test_pipeline(cfg, split)
    if len(dataset) == 0:
        raise ValueError(f'the {split} dataset of the config is empty')
    count = min(num_images, len(dataset))
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        for start in range(0, count, batch_size):
            items: List[dict] = [dataset[i] for i in range(start, min(start + batch_size, count))]
            data = model.data_preprocessor(pseudo_collate(items), training=False)
            if shape is not None:
                data['inputs'] = fit_to_shape(data['inputs'], shape)
            yield data


def first_input_shape(cfg: Config, model: nn.Module) -> Tuple[int, int]:
    """(H, W) of the first test image after the pipeline and the preprocessor: the default graph size."""
    data = next(pipeline_batches(cfg, model, 'test', 1))
    return tuple(data['inputs'].shape[-2:])
