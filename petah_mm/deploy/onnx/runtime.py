"""ONNX Runtime sessions on the CPU, as the tools and tests open them."""
from pathlib import Path
from typing import Optional, Union

import onnxruntime as ort


def cpu_session(model: Union[str, Path, bytes], threads: Optional[int] = None,
                options: Optional[ort.SessionOptions] = None) -> ort.InferenceSession:
    """An ORT session on the CPU execution provider; ``threads`` caps its intra-op threads."""
    options = options or ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])
