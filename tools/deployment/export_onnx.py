"""Export a trained task to ONNX with its adapters merged; optionally int8 and a check against PyTorch.

    python tools/deployment/export_onnx.py CONFIG CKPT OUT.onnx [--shape H W] [--int8 --calib-images N] [--verify]
        [--compare-plain]

Classification (mmpretrain) and semantic segmentation (mmseg) export with ``torch.onnx.export``;
Cascade (Mask) R-CNN (mmdet) end2end through mmdeploy. The graph's input is the normalised image
tensor the model's data preprocessor produces; the batch is dynamic, H and W are fixed at export.
``--verify`` exits 1 when ONNX Runtime and PyTorch disagree beyond the tolerances; ``--compare-plain`` when the
merged graph (or its int8 graph) holds other ops than the plain model's graph, exported the same way. The logic
lives in :mod:`petah_mm.tools.deployment.export_onnx`; see docs/deployment.md.
"""
from petah_mm.tools.deployment.export_onnx import main

if __name__ == '__main__':
    raise SystemExit(main())
