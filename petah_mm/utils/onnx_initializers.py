"""The weights of an ONNX graph (its initializers), read without running anything and within stated bounds.

An ONNX file is one protobuf message: parsing it runs no code, but it costs what the file declares. So
:func:`read_onnx_initializers` refuses, each time naming the file and the bound:

* a file larger than ``max_bytes``, before reading it; it then reads the file once, and the bytes that match
  ``pinned_sha256`` are the bytes it parses;
* a graph with more than ``max_tensors`` initializers, or with sparse initializers;
* an initializer whose data lives in another file (``data_location`` EXTERNAL): ``onnx.load`` would open that
  file; here it is never opened;
* an initializer that is not float32, has more than ``max_tensor_bytes`` bytes, or whose bytes do not match
  its declared shape.

The result keeps, beside each tensor, the names of the graph nodes that read it: an exporter gives a weight it
transposed no name of its own (``onnx::MatMul_1966``), but the node that consumes it keeps the module path
(``/backbone/encoder/layer.0/attention/attention/key/MatMul``), which is what a key map can go by.
"""
import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import torch


class OnnxWeightsError(RuntimeError):
    """An ONNX file whose weights are not read: too large, not plain float32 data, or not the pinned bytes."""


@dataclass(frozen=True)
class OnnxLimits:
    """What one ONNX file may cost: its size, how many initializers it holds, and the bytes of the largest."""
    max_bytes: int
    max_tensors: int
    max_tensor_bytes: int


@dataclass(frozen=True)
class OnnxInitializers:
    """A graph's initializers as tensors, and for each the names of the nodes that take it as an input."""
    tensors: Dict[str, torch.Tensor]
    consumers: Dict[str, Tuple[str, ...]]


def read_onnx_initializers(path: Union[str, Path], limits: OnnxLimits,
                           pinned_sha256: Optional[str] = None) -> OnnxInitializers:
    """Every initializer of the ONNX file at ``path`` as a float32 tensor (copied out of the file's bytes)."""
    # onnx (and its protobuf) is a deployment dependency: imported only when an ONNX file is read
    from google.protobuf.message import DecodeError
    from onnx import ModelProto

    path = Path(path)
    size = os.path.getsize(path)
    if size > limits.max_bytes:
        raise OnnxWeightsError(f'refused {path}: {size} bytes, more than the {limits.max_bytes} bytes an ONNX '
                               'weight file may have here')
    with open(path, 'rb') as f:
        data = f.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:  # it grew after the size check
        raise OnnxWeightsError(f'refused {path}: more than {limits.max_bytes} bytes')
    if pinned_sha256 is not None:
        digest = hashlib.sha256(data).hexdigest()
        if digest != pinned_sha256:
            raise OnnxWeightsError(f'refused {path}: its sha256 {digest} is not the pinned {pinned_sha256}; '
                                   'reinstall the package that ships it')
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except DecodeError as e:
        raise OnnxWeightsError(f'refused {path}: not an ONNX model ({e})') from None
    graph = model.graph
    if len(graph.initializer) > limits.max_tensors:
        raise OnnxWeightsError(f'refused {path}: {len(graph.initializer)} initializers, more than the '
                               f'{limits.max_tensors} expected of it')
    if len(graph.sparse_initializer):
        raise OnnxWeightsError(f'refused {path}: it holds {len(graph.sparse_initializer)} sparse initializers, '
                               'which this reader does not read')
    tensors = {}
    for proto in graph.initializer:
        if proto.name in tensors:
            raise OnnxWeightsError(f'refused {path}: two initializers named {proto.name!r}')
        tensors[proto.name] = _tensor(path, proto, limits.max_tensor_bytes)
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            if name in tensors:
                consumers[name].append(node.name)
    return OnnxInitializers(tensors, {name: tuple(consumers[name]) for name in tensors})


def _tensor(path: Path, proto, max_tensor_bytes: int) -> torch.Tensor:
    from onnx import TensorProto

    where = f'{path}: initializer {proto.name!r}'
    if proto.data_location == TensorProto.EXTERNAL or len(proto.external_data):
        files = [entry.value for entry in proto.external_data if entry.key == 'location']
        raise OnnxWeightsError(f'refused {where}: its data is stored in another file {files}, which would be '
                               'opened (ONNX external data); only weights inside the one pinned file are read')
    if proto.data_type != TensorProto.FLOAT:
        raise OnnxWeightsError(f'refused {where}: data type {TensorProto.DataType.Name(proto.data_type)}, '
                               'not FLOAT (float32)')
    shape = tuple(proto.dims)
    if any(d < 0 for d in shape):
        raise OnnxWeightsError(f'refused {where}: negative dimension in its shape {shape}')
    nbytes = 4 * int(np.prod(shape, dtype=np.int64))  # int64: a declared shape can overflow a platform int
    if nbytes > max_tensor_bytes:
        raise OnnxWeightsError(f'refused {where}: shape {shape} is {nbytes} bytes, more than the '
                               f'{max_tensor_bytes} bytes a tensor may have here')
    if proto.raw_data:
        if len(proto.raw_data) != nbytes:
            raise OnnxWeightsError(f'refused {where}: {len(proto.raw_data)} bytes of data for shape {shape} '
                                   f'({nbytes} bytes)')
        array = np.frombuffer(proto.raw_data, dtype='<f4')
    else:
        if 4 * len(proto.float_data) != nbytes:
            raise OnnxWeightsError(f'refused {where}: {len(proto.float_data)} values for shape {shape}')
        array = np.asarray(proto.float_data, dtype=np.float32)
    return torch.from_numpy(array.astype(np.float32).reshape(shape))  # astype copies: writable, native order
