"""Reading JSON data that others wrote (package configs, tensor-file metadata) with bounded cost and clear errors.

Python's ``json`` recurses once per nesting level (a ``RecursionError`` at about 1000 levels, and
every walker of the result recurses too), converts integer literals of any length (a raw
``ValueError`` past 4300 digits), and reads ``NaN``, ``Infinity`` and overflowing literals such as
``1e999`` as non-finite floats, none of which standard JSON (RFC 8259) has. :func:`parse_json_data`
refuses all three with a :class:`DataError` naming the file and the key, before any caller
walks the data.
"""
import json
import math
import re
from typing import Callable, Optional

#: nesting levels allowed; petah_mm's own package configs nest at most 8 (``configs/``, measured with
#: :func:`nesting_depth`), and walking 64 levels stays far below Python's recursion limit
MAX_DEPTH = 64
#: digits an integer literal may have: enough for every 64-bit integer
MAX_INT_DIGITS = 20
#: a JSON string (with its escapes) or a bracket: what :func:`nesting_depth` counts, skipping brackets in strings
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class DataError(ValueError):
    """Refused data (JSON, or a training config's numbers): the file or entry, the key and the reason."""


class _LongInteger(str):
    """An integer literal over :data:`MAX_INT_DIGITS`, kept unconverted so the refusal can name its key."""


def nesting_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of ``[``/``{`` in ``text`` (brackets inside strings do not count), without recursion;
    counting stops once it passes ``limit``."""
    depth = deepest = 0
    for match in _STRING_OR_BRACKET.finditer(text):
        token = match.group()
        if token in ('[', '{'):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif token in (']', '}'):
            depth -= 1
    return deepest


def _parse_int(literal: str):
    return _LongInteger(literal) if len(literal.lstrip('-')) > MAX_INT_DIGITS else int(literal)


def parse_json_data(text: str, what: str, object_hook: Optional[Callable[[dict], object]] = None,
                    finite: bool = True):
    """``json.loads(text)`` within the limits above, or :class:`DataError` naming ``what``; text that is not
    JSON raises ``json.JSONDecodeError`` as ``json.loads`` does, for the caller to explain.

    ``finite`` (the default) refuses ``NaN``, ``Infinity`` and literals that overflow to them, naming
    the key. Refusing every one, rather than only those that feed a loss or a size, needs no list of
    such keys (which would lag every library's new losses and sizes), and costs nothing: standard
    JSON cannot express them, so no writer that follows the standard produces one.
    """
    if nesting_depth(text) > MAX_DEPTH:
        raise DataError(f'{what}: JSON nested more than {MAX_DEPTH} levels deep; refused (petah_mm data '
                        'nests a few levels, so this file is not one it wrote)')
    data = json.loads(text, object_hook=object_hook, parse_int=_parse_int, parse_constant=float)
    check_numbers(data, what, finite)
    return data


def check_numbers(data, what: str, finite: bool = True, where: Optional[Callable[[str], bool]] = None,
                  key: str = '') -> None:
    """Refuse integer literals over :data:`MAX_INT_DIGITS` and, with ``finite``, non-finite floats.

    ``where(name)``, if given, limits the finite check to numbers below a dict key it accepts (a
    training config's losses and sizes); ``key`` is the path of ``data``, and every error names the
    path of the number (``model.head.loss.loss_weight``).
    """
    _check_numbers(data, what, key, finite, where, checked=where is None)


def _check_numbers(node, what, key, finite, where, checked) -> None:
    if isinstance(node, _LongInteger):
        raise DataError(f'{what}: {key or "the value"} is an integer of {len(node.lstrip("-"))} digits '
                        f'({node[:12]}...); integers have at most {MAX_INT_DIGITS} digits here')
    if isinstance(node, float) and finite and checked and not math.isfinite(node):
        number = f'{key}={node}' if key else f'the value {node}'
        raise DataError(f'{what}: {number} is not a finite number; refused, since a non-finite loss weight or '
                        'size turns every result into NaN (write a finite value)')
    if isinstance(node, dict):
        for name, value in node.items():
            _check_numbers(value, what, f'{key}.{name}' if key else str(name), finite, where,
                           checked or where(str(name)))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _check_numbers(value, what, f'{key}[{i}]', finite, where, checked)
