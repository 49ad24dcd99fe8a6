"""The one reader of JSON data that others wrote: bounded nesting and integers, finite numbers, keys named; and
the tensor-file metadata that goes through it."""
import json

import pytest
import torch
from safetensors.torch import save as save_safetensors_bytes

from petah_mm.utils.json_data import MAX_DEPTH, DataError, nesting_depth, parse_json_data
from petah_mm.utils.tensor_file import FORMAT_VERSION, TensorFileError, read_tensor_file, tensor_digest


@pytest.mark.parametrize('depth', [MAX_DEPTH + 1, 500, 200_000])
@pytest.mark.parametrize('brackets', ['[]', '{}'])
def test_deep_nesting_is_refused_before_json_recurses(depth, brackets):
    opening, closing = ('[', ']') if brackets == '[]' else ('{"a": ', '}')
    text = opening * depth + '1' + closing * depth
    with pytest.raises(DataError, match=f'x.json: JSON nested more than {MAX_DEPTH} levels deep'):
        parse_json_data(text, 'x.json')


def test_the_depth_limit_itself_parses_and_brackets_in_strings_do_not_count():
    text = '[' * MAX_DEPTH + '"[[[{{\\"]]"' + ']' * MAX_DEPTH
    assert nesting_depth(text) == MAX_DEPTH
    value = parse_json_data(text, 'x.json')
    for _ in range(MAX_DEPTH):
        value = value[0]
    assert value == '[[[{{"]]'


def test_integer_digits_are_limited_and_the_key_named():
    assert parse_json_data('{"seed": -18446744073709551615}', 'x') == {'seed': -(2 ** 64 - 1)}  # 20 digits
    with pytest.raises(DataError, match=r'x.json: a.b\[1\] is an integer of 5000 digits \(999999999999...\); '
                       'integers have at most 20 digits'):
        parse_json_data('{"a": {"b": [0, ' + '9' * 5000 + ']}}', 'x.json')


@pytest.mark.parametrize('literal, shown', [('1e999', 'inf'), ('-1e999', '-inf'), ('NaN', 'nan'),
                                            ('Infinity', 'inf'), ('-Infinity', '-inf')])
def test_non_finite_numbers_are_refused_with_their_key(literal, shown):
    text = '{"head": {"loss": [{"loss_weight": %s}]}}' % literal
    with pytest.raises(DataError, match=rf'x.json: head.loss\[0\].loss_weight={shown} is not a finite number'):
        parse_json_data(text, 'x.json')
    assert str(parse_json_data(text, 'x.json', finite=False)['head']['loss'][0]['loss_weight']) == shown


def test_object_hook_and_plain_data_pass_unchanged():
    data = dict(a=[1, 2.5, None, True, 'x'], b={'c': {'__tuple__': [1, 2]}})

    def tuples(node):
        return tuple(node['__tuple__']) if set(node) == {'__tuple__'} else node

    assert parse_json_data(json.dumps(data), 'x') == data
    assert parse_json_data(json.dumps(data), 'x', object_hook=tuples)['b']['c'] == (1, 2)
    with pytest.raises(json.JSONDecodeError):
        parse_json_data('{"a": ', 'x')


def tensor_file_bytes(meta: dict, kind: str = 'adapter') -> bytes:
    """A petah_mm tensor file whose metadata strings are written as given (a writer that is not petah_mm's)."""
    tensors = {'w': torch.ones(2)}
    header = dict(meta, format=f'petah_mm.{kind}', format_version=FORMAT_VERSION,
                  sha256=tensor_digest(tensors.items()))
    return save_safetensors_bytes(tensors, metadata=header)


@pytest.mark.parametrize('value, error', [
    ('[' * 200_000 + ']' * 200_000, "metadata 'deep': JSON nested more than 64 levels deep"),
    ('[' * 500 + ']' * 500, "metadata 'deep': JSON nested more than 64 levels deep"),
    ('{"rank": ' + '7' * 5000 + '}', "metadata 'deep': rank is an integer of 5000 digits"),
    ('{"alpha": 1e999}', "metadata 'deep': alpha=inf is not a finite number"),
    ('NaN', "metadata 'deep': the value nan is not a finite number"),
])
def test_tensor_file_metadata_goes_through_the_same_limits(tmp_path, value, error):
    path = tmp_path / 'adapter.safetensors'
    path.write_bytes(tensor_file_bytes(dict(deep=value)))
    with pytest.raises(TensorFileError, match=f'{path}: {error}'.replace('[', r'\[')):
        read_tensor_file(path, 'adapter')


def test_a_sparse_pack_keeps_non_finite_metadata_like_its_tensors(tmp_path):
    path = tmp_path / 'pack.safetensors'
    path.write_bytes(tensor_file_bytes(dict(meta='{"best": -Infinity}'), kind='sparse'))
    assert read_tensor_file(path, 'sparse')[1]['meta'] == {'best': float('-inf')}
