"""Edge deployment: trained tasks as ONNX graphs (adapters merged), int8, and ONNX Runtime checks.

Importing this package needs onnx and onnxruntime (``requirements/deploy.txt``); detectors also need
mmdeploy, imported only when a detector is exported.
"""
from .accuracy import onnx_top1
from .export import export_onnx
from .exported import ExportedGraph, Verification, merged
from .quantize import int8_path, quantize_graph
from .verify import verify_export

__all__ = [
    'onnx_top1', 'ExportedGraph', 'export_onnx', 'merged', 'int8_path', 'quantize_graph', 'Verification',
    'verify_export'
]
