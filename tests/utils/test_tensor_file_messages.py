"""A refusal of a tensor file quotes at most a few hundred characters of what the file holds (issue 31, item 5)."""
import pytest
import torch
from safetensors.torch import save_file

from petah_mm.utils.tensor_file import TensorFileError, read_tensor_file, write_tensor_file


@pytest.mark.parametrize('metadata, reason', [
    (dict(format='x' * 5_000_000), 'not a petah_mm adapter file'),
    (dict(format='petah_mm.adapter', format_version='9' * 5_000_000), 'format version'),
])
def test_long_header_values_are_quoted_short(tmp_path, metadata, reason):
    save_file({'w': torch.zeros(2)}, str(tmp_path / 'a.safetensors'), metadata=metadata)
    with pytest.raises(TensorFileError, match=reason) as refused:
        read_tensor_file(tmp_path / 'a.safetensors', kind='adapter')
    assert 'a.safetensors' in str(refused.value) and len(str(refused.value)) < 1000


def test_a_long_tensor_name_is_quoted_short(tmp_path):
    write_tensor_file(tmp_path / 't.safetensors', {'n' * 100_000: torch.tensor([float('nan')])}, {}, kind='task')
    with pytest.raises(TensorFileError, match='holds NaN or Inf') as refused:
        read_tensor_file(tmp_path / 't.safetensors', kind='task')
    assert len(str(refused.value)) < 1000
