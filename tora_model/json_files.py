"""Reading a JSON object a user supplied (a file, or a string inside one) into the caller's own error.

Every JSON the library reads comes from a download or another program: a VAE folder's config.json, a diffusers shard
index, a step-cache fit, a safetensors header and the model config inside an st_dit header. A cut-off download, an
HTML error page saved under the file's name or a binary file renamed must become the caller's `ToraError` naming
the source, what was expected, what arrived and how to fix it (errors.py) — never a raw JSONDecodeError,
UnicodeDecodeError, RecursionError or, later, a TypeError from a value of the wrong type.

Messages read "<source> <what arrived>: expected <what>. <fix>"; `entry_problems` words the field checks that
follow ("<key> must be <what>, got <value>").
"""

from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .errors import CheckpointError, ToraError

# (what is expected, in words; its check) for one entry of a JSON object
Entry = tuple[str, Callable[[object], bool]]

_KINDS = {dict: "object", list: "array (list)", str: "string", bool: "true/false", type(None): "null"}
_SHOWN = reprlib.Repr()  # limits set as attributes: Repr takes them as arguments only from Python 3.12
_SHOWN.maxstring, _SHOWN.maxother, _SHOWN.maxlist, _SHOWN.maxdict = 60, 60, 8, 4


def json_kind(value: object) -> str:
    """The JSON type of a parsed value, for messages: 'object', 'array (list)', 'string', 'number', …"""
    return _KINDS.get(type(value), "number")


def shown(value: object) -> str:
    """A parsed value as a message quotes it: its repr, shortened with '...' when long (a whole file may arrive)."""
    return _SHOWN.repr(value)


def finite_number(value: object) -> bool:
    """An int or float that is finite; JSON true/false parse to bools, which are not numbers here."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def json_object(data: bytes | str, fail: Callable[[str], Exception]) -> dict:
    """`data` parsed as a JSON object; otherwise raises `fail(what arrived)`, e.g. fail('holds a JSON null').

    What arrived is worded to follow the source's name: 'is not valid JSON (Expecting value at line 3, column 1)',
    'is not a text file (not UTF-8 text: invalid start byte at byte offset 17)', 'is nested too deeply to read as
    JSON' or 'holds a JSON array (list)'.
    """
    try:
        value = json.loads(data)
    except json.JSONDecodeError as err:
        # some messages end in "at" ("Unterminated string starting at"): the position follows here
        what = err.msg.removesuffix(" at")
        raise fail(f"is not valid JSON ({what} at line {err.lineno}, column {err.colno})") from None
    except UnicodeDecodeError as err:
        encoding = err.encoding.upper()
        raise fail(
            f"is not a text file (not {encoding} text: {err.reason} at byte offset {err.start})"
        ) from None
    except RecursionError:
        raise fail("is nested too deeply to read as JSON") from None
    if not isinstance(value, dict):
        raise fail(f"holds a JSON {json_kind(value)}")
    return value


def parse_json_object(
    data: bytes | str, source: str, expected: str, fix: str, error: type[ToraError] = CheckpointError
) -> dict:
    """`data` parsed as a JSON object, or `error('<source> <what arrived>: expected <expected>. <fix>')`."""
    return json_object(data, lambda arrived: error(f"{source} {arrived}: expected {expected}. {fix}"))


def read_json_object(path: Path, expected: str, fix: str, error: type[ToraError] = CheckpointError) -> dict:
    """The JSON object in the file `path`; an unreadable file or anything else raises `error` as
    `parse_json_object` words it."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise error(f"{path} cannot be read ({err.strerror or err}): expected {expected}. {fix}") from None
    return parse_json_object(data, str(path), expected, fix, error)


def entry_problems(
    data: Mapping[str, object], entries: Mapping[str, Entry], required: Iterable[str] = ()
) -> list[str]:
    """What is wrong with some entries of a parsed JSON object, one phrase each: which required keys are absent
    ('key is missing (expected …)', or 'a, b and c are missing'), then 'key must be <what>, got <value>' for each
    present key that fails its check."""
    missing = [key for key in required if key not in data]
    problems = []
    if len(missing) == 1:
        problems.append(f"{missing[0]} is missing (expected {entries[missing[0]][0]})")
    elif missing:
        problems.append(f"{', '.join(missing[:-1])} and {missing[-1]} are missing")
    problems += [
        f"{key} must be {what}, got {shown(data[key])}"
        for key, (what, fits) in entries.items()
        if key in data and not fits(data[key])
    ]
    return problems
