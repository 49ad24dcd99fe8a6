"""Toy datasets: reproducible to the byte, never half-written, readable by the mm* libraries."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from petah_mm.datasets import make_toy_ade20k, make_toy_classification, make_toy_coco, toy_data
from petah_mm.tools.datagen import make_toy_data

SMALL = {  # keep every dataset tiny: the whole module must stay well under 20 s
    make_toy_coco: dict(num_train=6, num_val=3),
    make_toy_ade20k: dict(num_train=4, num_val=2),
    make_toy_classification: dict(num_classes=3, num_train_per_class=4, num_val_per_class=2),
}
GENERATORS = pytest.mark.parametrize('make', list(SMALL), ids=lambda make: make.__name__)


def files_of(root) -> dict:
    """Relative path -> bytes of every file, the manifest included."""
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted(Path(root).rglob('*')) if path.is_file()}


def interior(mask: np.ndarray) -> np.ndarray:
    """Mask pixels whose four neighbours are in the mask too, so edges and JPEG ringing drop out."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    return make_toy_coco(tmp_path_factory.mktemp('toy') / 'coco', **SMALL[make_toy_coco])['root']


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    args = SMALL[make_toy_ade20k]
    return make_toy_ade20k(tmp_path_factory.mktemp('toy') / 'ade20k', **args)['root']


@pytest.fixture(scope='module')
def cls_root(tmp_path_factory):
    args = SMALL[make_toy_classification]
    return make_toy_classification(tmp_path_factory.mktemp('toy') / 'cls', **args)['root']


@GENERATORS
def test_same_seed_gives_identical_bytes(make, tmp_path):
    first = files_of(make(tmp_path / 'a', seed=3, **SMALL[make])['root'])
    second = files_of(make(tmp_path / 'b', seed=3, **SMALL[make])['root'])
    assert len(first) > 5
    assert first == second


@GENERATORS
def test_other_seed_changes_every_image(make, tmp_path):
    first = files_of(make(tmp_path / 'a', seed=0, **SMALL[make])['root'])
    second = files_of(make(tmp_path / 'b', seed=1, **SMALL[make])['root'])
    images = [name for name in first if name.endswith('.jpg')]
    assert images and sorted(first) == sorted(second)
    assert all(first[name] != second[name] for name in images)


@GENERATORS
def test_existing_dataset_is_reused_but_never_overwritten(make, tmp_path):
    info = make(tmp_path / 'data', **SMALL[make])
    manifest = Path(info['root'], toy_data.MANIFEST_NAME)
    written = manifest.stat().st_mtime_ns
    assert make(tmp_path / 'data', **SMALL[make]) == info
    assert manifest.stat().st_mtime_ns == written
    with pytest.raises(FileExistsError, match=r'seed: 0 on disk, 5 requested.*delete the dir'):
        make(tmp_path / 'data', seed=5, **SMALL[make])


def test_foreign_directory_is_refused(tmp_path):
    (tmp_path / 'data').mkdir()
    (tmp_path / 'data' / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='not a complete toy dataset'):
        make_toy_coco(tmp_path / 'data', **SMALL[make_toy_coco])
    assert files_of(tmp_path / 'data') == {'notes.txt': b'mine'}


def test_interrupted_run_leaves_no_dataset(tmp_path, monkeypatch):
    calls = []
    real_render = toy_data._render

    def render_then_crash(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_render(*args, **kwargs)

    monkeypatch.setattr(toy_data, '_render', render_then_crash)
    with pytest.raises(KeyboardInterrupt):
        make_toy_coco(tmp_path / 'coco', **SMALL[make_toy_coco])
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments_fail_before_writing(tmp_path):
    with pytest.raises(ValueError, match='num_val'):
        make_toy_coco(tmp_path / 'coco', num_val=0)
    with pytest.raises(ValueError, match='num_classes'):
        make_toy_classification(tmp_path / 'cls', num_classes=1)
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_what_the_library_writes(tmp_path, capsys):
    make_toy_data.main(['cls', str(tmp_path / 'cli'), '--seed', '7', '--num-classes', '3', '--num-train', '4',
                        '--num-val', '2'])
    assert json.loads(capsys.readouterr().out)['num_train_images'] == 12
    library = make_toy_classification(tmp_path / 'lib', seed=7, **SMALL[make_toy_classification])
    assert files_of(tmp_path / 'cli') == files_of(library['root'])
    with pytest.raises(SystemExit, match='2'):
        make_toy_data.main(['coco', str(tmp_path / 'coco'), '--num-classes', '3'])


def test_coco_categories_are_the_official_80():
    from mmdet.datasets import CocoDataset
    categories = toy_data.COCO_CATEGORIES
    assert [cat['name'] for cat in categories] == list(CocoDataset.METAINFO['classes'])
    ids = {cat['name']: cat['id'] for cat in categories}
    anchors = ('person', 'stop sign', 'dining table', 'tv', 'toothbrush')
    assert [ids[name] for name in anchors] == [1, 13, 67, 72, 90]
    assert {kind: ids[name] for kind, (_, name) in toy_data.COCO_SHAPE_CATEGORIES.items()} == {
        kind: cat_id for kind, (cat_id, _) in toy_data.COCO_SHAPE_CATEGORIES.items()}


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_annotations_match_their_images(coco_root, split):
    coco = COCO(str(Path(coco_root, f'annotations/instances_{split}2017.json')))
    anns = coco.loadAnns(coco.getAnnIds())
    assert len({ann['id'] for ann in anns}) == len(anns) >= len(coco.getImgIds())
    for ann in anns:
        info = coco.loadImgs(ann['image_id'])[0]
        image = np.asarray(Image.open(Path(coco_root, f'{split}2017', info['file_name'])))
        assert image.shape == (info['height'], info['width'], 3)
        assert ann['category_id'] in (37, 38, 72) and ann['iscrowd'] == 0
        assert len(ann['segmentation'][0]) >= {37: 48, 38: 6, 72: 8}[ann['category_id']]
        mask = coco.annToMask(ann).astype(bool)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        assert x - 1 <= xs.min() and xs.max() <= x + w and y - 1 <= ys.min() and ys.max() <= y + h
        assert mask.sum() == pytest.approx(ann['area'], rel=0.1)
        assert w * h >= ann['area'] and max(w, h) <= 0.45 * min(image.shape[:2])
        # The drawn shape is a flat colour exactly where the polygon says it is.
        assert image[interior(mask)].std(axis=0).max() < 15


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_loads_in_mmdet_with_default_metainfo(coco_root, split):
    from mmdet.datasets import CocoDataset
    from mmdet.utils import register_all_modules
    register_all_modules()
    dataset = CocoDataset(data_root=coco_root, ann_file=f'annotations/instances_{split}2017.json',
                          data_prefix=dict(img=f'{split}2017/'), pipeline=[])
    classes = CocoDataset.METAINFO['classes']
    expected = {classes.index(name) for _, name in toy_data.COCO_SHAPE_CATEGORIES.values()}
    assert expected == {32, 33, 62}  # sports ball, kite, tv
    coco = COCO(str(Path(coco_root, f'annotations/instances_{split}2017.json')))
    assert len(dataset) == len(coco.getImgIds())
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        assert Path(info['img_path']).is_file()
        labels = sorted(instance['bbox_label'] for instance in info['instances'])
        names = [coco.loadCats(ann['category_id'])[0]['name']
                 for ann in coco.loadAnns(coco.getAnnIds(imgIds=info['img_id']))]
        assert labels == sorted(classes.index(name) for name in names)


def test_coco_ground_truth_scores_perfect_map_in_mmdet(coco_root):
    """Masks decoded by mmdet's own loader, scored by CocoMetric: evaluable, not just loadable."""
    import torch
    from mmdet.datasets import CocoDataset
    from mmdet.evaluation import CocoMetric
    from mmdet.utils import register_all_modules
    register_all_modules()
    ann_file = 'annotations/instances_val2017.json'
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadAnnotations', with_bbox=True, with_mask=True)]
    dataset = CocoDataset(data_root=coco_root, ann_file=ann_file, data_prefix=dict(img='val2017/'),
                          pipeline=pipeline)
    metric = CocoMetric(ann_file=str(Path(coco_root, ann_file)), metric=['bbox', 'segm'])
    metric.dataset_meta = dataset.metainfo
    for index in range(len(dataset)):
        gt = dataset[index]
        boxes = gt['gt_bboxes'].tensor
        metric.process({}, [dict(img_id=gt['img_id'], ori_shape=gt['ori_shape'],
                                 pred_instances=dict(
                                     bboxes=boxes, scores=torch.ones(len(boxes)),
                                     labels=torch.from_numpy(gt['gt_bboxes_labels']),
                                     masks=gt['gt_masks'].to_tensor(torch.bool, 'cpu')))])
    results = metric.evaluate(len(dataset))
    assert results['coco/bbox_mAP'] == results['coco/segm_mAP'] == 1.0


def test_ade20k_label_values_are_as_documented():
    from mmseg.datasets import ADE20KDataset
    classes = ADE20KDataset.METAINFO['classes']
    assert classes[toy_data.ADE_BACKGROUND_VALUE - 1] == 'wall'
    assert {kind: classes[value - 1] for kind, value in toy_data.ADE_SHAPE_VALUES.items()} == {
        'circle': 'ball', 'triangle': 'tent', 'square': 'television receiver'}


@pytest.mark.parametrize('split', ['training', 'validation'])
def test_ade20k_loads_in_mmseg_with_reduced_labels(ade_root, split):
    from mmseg.datasets import ADE20KDataset
    from mmseg.datasets.transforms import LoadAnnotations
    dataset = ADE20KDataset(data_root=ade_root, pipeline=[], data_prefix=dict(
        img_path=f'images/{split}', seg_map_path=f'annotations/{split}'))
    assert len(dataset) == SMALL[make_toy_ade20k]['num_train' if split == 'training' else 'num_val']
    shape_values = set(toy_data.ADE_SHAPE_VALUES.values())
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        raw = np.asarray(Image.open(info['seg_map_path']))
        assert raw.dtype == np.uint8 and raw.shape == Image.open(info['img_path']).size[::-1]
        assert set(np.unique(raw)) - shape_values == {toy_data.ADE_BACKGROUND_VALUE}
        assert set(np.unique(raw)) & shape_values
        reduced = LoadAnnotations()(dict(info))['gt_seg_map']
        np.testing.assert_array_equal(reduced, raw.astype(np.int64) - 1)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_classification_loads_in_mmpretrain(cls_root, split):
    from mmpretrain.datasets import CustomDataset
    classes_file = Path(cls_root, 'classes.txt')
    dataset = CustomDataset(data_root=cls_root, data_prefix=split, classes=str(classes_file),
                            pipeline=[])
    names = classes_file.read_text().splitlines()
    assert list(dataset.metainfo['classes']) == names
    args = SMALL[make_toy_classification]
    assert len(dataset) == args['num_classes'] * args[f'num_{split}_per_class']
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        assert names[info['gt_label']] == Path(info['img_path']).parent.name


def test_classes_are_separable_by_colour_alone(tmp_path):
    """A nearest-centroid rule on the most saturated pixels must already be perfect."""
    root = Path(make_toy_classification(tmp_path / 'cls', num_classes=6, num_train_per_class=6,
                                        num_val_per_class=4)['root'])

    def features(split):
        for path in sorted(root.glob(f'{split}/*/*.jpg')):
            pixels = np.asarray(Image.open(path), np.float64).reshape(-1, 3)
            saturation = pixels.max(1) - pixels.min(1)
            yield path.parent.name, pixels[saturation >= np.quantile(saturation, 0.9)].mean(0)

    train = {}
    for name, feature in features('train'):
        train.setdefault(name, []).append(feature)
    centroids = {name: np.mean(feats, axis=0) for name, feats in train.items()}
    for name, feature in features('val'):
        nearest = min(centroids, key=lambda other: np.linalg.norm(centroids[other] - feature))
        assert nearest == name
