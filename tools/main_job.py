"""The main job: Cascade Mask R-CNN + FPN with a PETAH-2 adapter, trained on CPU on data it generates, seeded and
deterministic. By default PETAH-2 on the real ImageNet-pretrained EfficientNet-Lite0 and the real animal
silhouettes (docs/real_data.md); the EfficientFormer-L1 toy run is one --config away.

    .venv/bin/python tools/main_job.py [--work-dir work_dirs/main_job] [--seed 0] [--cfg-options ...]
    .venv/bin/python tools/main_job.py --work-dir work_dirs/main_job_toy \\
        --config configs/toy/cascade-mask-rcnn_ef-l1-petah2_fpn_toy-coco.py

The logic lives in :mod:`petah_mm.tools.studies.main_job`, where the tests import it.
"""
from petah_mm.tools.studies.main_job import main

if __name__ == '__main__':
    main()
