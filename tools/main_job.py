"""The main job: Cascade Mask R-CNN + FPN with a PETAH-2 adapter, trained on CPU on data it generates, seeded and
deterministic. By default the EfficientFormer-L1 toy run; the real ImageNet-pretrained EfficientNet-Lite0 on the
real animal silhouettes is one --config away (docs/real_data.md).

    .venv/bin/python tools/main_job.py [--work-dir work_dirs/main_job] [--seed 0] [--cfg-options ...]
    .venv/bin/python tools/main_job.py --work-dir work_dirs/main_job_real \\
        --config configs/real/cascade-mask-rcnn_tf-efficientnet-lite0-petah2_fpn_animal-silhouettes.py

The logic lives in :mod:`petah_mm.tools.main_job`, where the tests import it.
"""
from petah_mm.tools.main_job import main

if __name__ == '__main__':
    main()
