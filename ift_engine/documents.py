"""Reading the files users write (workflow and training YAML, JSON data) without trusting them.

Bounds, each an error naming the file and what to do: the size of the file, UTF-8 (with the
byte offset of the first bad byte), the nesting depth (of the values read, whichever parser
read them), and the size of a YAML document once its aliases are expanded (a "billion laughs"
document is a few hundred bytes that expand to gigabytes). PyYAML is kept as the parser: the
alias checks run on its node graph before any Python object is built.
"""

from __future__ import annotations

import gc
import json
import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml

from .errors import IftError

#: libyaml's parser when PyYAML was built with it (the wheels are): about 10x faster.
BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MERGE_TAG = "tag:yaml.org,2002:merge"
BOM = b"\xef\xbb\xbf"
VALUE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent, yaml.AliasEvent)
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Deeper than any real workflow or record; far below Python's recursion limit.
MAX_DEPTH = 100
#: Values a YAML document may hold once its aliases are expanded: this many, or ten times the
#: values written out in a bigger file. A billion-laughs document exceeds it by orders of magnitude.
MAX_EXPANDED_NODES = 1_000_000
MAX_EXPANSION = 10
#: Values (scalars, lists, mappings) a document may write out: a 10,000-node workflow holds about
#: 110,000. Counted before the document is built, so a huge file fails in about a second.
MAX_VALUES = 1_000_000
#: Python converts integers of at most this many digits (``sys.get_int_max_str_digits``).
MAX_INT_DIGITS = 4300


class SafeLoader(BaseLoader):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last
    silently). Keys merged in with ``<<`` may be overridden, as YAML means them to be."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=deep)
            with suppress(TypeError):  # an unhashable key: PyYAML's own error follows
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"the key {key!r} is written twice; keep one", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]


class DuplicateKey(ValueError):
    """A JSON object that names a key twice."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise DuplicateKey(f"the key {key!r} is written twice; keep one")
        mapping[key] = value
    return mapping


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a number has more than {MAX_INT_DIGITS:,} digits; no setting takes one so long")
    return int(digits)


def loads_json(text: str | bytes) -> Any:
    """``json.loads`` for user data: a duplicate key or a number too long to convert is a
    ``ValueError`` saying so (``json.JSONDecodeError`` for bad syntax, as before)."""
    return json.loads(text, object_pairs_hook=_unique_keys, parse_int=_bounded_int)


def value_problem(exc: ValueError) -> str:
    """What a ``ValueError`` raised while building a value says, in the engine's words."""
    if "integer string conversion" in str(exc):  # Python's own bound on int("9" * 5000)
        return f"a number has more than {MAX_INT_DIGITS:,} digits; no setting takes one so long"
    return str(exc).split(";")[0]


class _CollectorPause:
    """The cyclic garbage collector is the process's: it stays paused while any thread is
    inside ``collector_paused``, and is restored as it was when the last one leaves."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.was_enabled = False

    def enter(self) -> None:
        with self.lock:
            if self.inside == 0:
                self.was_enabled = gc.isenabled()
                gc.disable()
            self.inside += 1

    def leave(self) -> None:
        with self.lock:
            self.inside -= 1
            if self.inside == 0 and self.was_enabled:
                gc.enable()


_pause = _CollectorPause()


@contextmanager
def collector_paused() -> Iterator[None]:
    """Building a big document allocates millions of objects that are not garbage; the cyclic
    collector would walk them over and over (validating 300,000 nodes: 14 s with it, 7 s without)."""
    _pause.enter()
    try:
        yield
    finally:
        _pause.leave()


def decode_utf8(data: bytes, source: str, error: type[IftError]) -> str:
    """UTF-8 text; a byte-order mark some editors put first is dropped, not read as text."""
    try:
        return data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(
            f"{source}: not UTF-8 (byte 0x{data[exc.start]:02x} at byte offset {exc.start}); save it as UTF-8"
        ) from None


def open_regular(path: Path, what: str, error: type[IftError]) -> int:
    """A descriptor of a user's regular file, open for reading. A folder, a device, a FIFO or a
    socket is refused (a link is followed to what it names); a FIFO is opened without waiting
    for a writer, so nothing blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or type(exc).__name__}") from None
    if stat.S_ISREG(mode):
        return fd
    os.close(fd)
    if stat.S_ISDIR(mode):
        raise error(f"{path}: the {what} is a folder; give a file")
    raise error(f"{path}: the {what} is not a regular file (a device, pipe or socket); give a file")


def read_bytes(path: Path, what: str, error: type[IftError], limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a user's regular file (see ``open_regular``), never more than ``limit`` read."""
    fd = open_regular(path, what, error)
    try:
        data = b""
        while len(data) <= limit and (more := os.read(fd, limit + 1 - len(data))):
            data += more
    except OSError as exc:
        raise error(f"{path}: cannot read the {what}: {exc.strerror or type(exc).__name__}") from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise error(f"{path}: the {what} is larger than {describe_size(limit)}; give a smaller file")
    return data


def describe_size(size: int) -> str:
    return f"{size // 2**20} MiB" if size >= 2**20 else f"{size:,} bytes"


def read_text(path: Path, what: str, error: type[IftError]) -> str:
    """A user's text file, checked: a regular file, at most ``MAX_FILE_BYTES``, UTF-8."""
    return decode_utf8(read_bytes(path, what, error), str(path), error)


def _check_nodes(root: yaml.Node, source: str, error: type[IftError]) -> None:
    """Expanded size and alias loops of a composed YAML document, without recursion; a shared
    node (an alias) counts once per use, as it would once loaded and walked."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            active.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            continue
        if key in sizes:
            continue
        if key in active:
            raise error(f"{source}: an alias refers to a value that contains it; aliases must not loop")
        active.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    limit = max(MAX_EXPANDED_NODES, MAX_EXPANSION * len(sizes))
    if sizes[id(root)] > limit:
        raise error(
            f"{source}: the document expands to more than {limit:,} values (aliases repeated inside "
            "aliases); write the values out"
        )


def check_depth(value: Any, source: str, error: type[IftError]) -> Any:
    """``value``, or ``error`` when its lists and mappings nest deeper than ``MAX_DEPTH``
    (whichever parser read it: later code walks values recursively). Shared values (YAML
    aliases) are walked once."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(value, 1)]
    count = 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise too_many_values(source, error)
        if not isinstance(item, (dict, list)) or id(item) in seen:
            continue
        if depth > MAX_DEPTH:
            raise error(f"{source}: nested more than {MAX_DEPTH} levels deep; flatten the document")
        seen.add(id(item))
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return value


def too_many_values(source: str, error: type[IftError]) -> IftError:
    return error(
        f"{source}: the document holds more than {MAX_VALUES:,} values; split it (a workflow has at "
        "most 10,000 nodes; training records belong in a dataset file)"
    )


def _count_values(text: str, source: str, error: type[IftError]) -> None:
    """Refuse a YAML document of more than ``MAX_VALUES`` values, reading only its events (ten
    times faster than building its nodes). A text shorter than that cannot hold as many."""
    if len(text) <= MAX_VALUES:
        return
    loader = SafeLoader(text)
    try:
        count = 0
        while loader.check_event():
            event = loader.get_event()
            count += isinstance(event, VALUE_EVENTS)
            if count > MAX_VALUES:
                raise too_many_values(source, error)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def parse_yaml(text: str, source: str, error: type[IftError]) -> Any:
    """``yaml.safe_load`` with the bounds above; syntax errors name the line. A JSON document
    (YAML's subset, which generated workflows often are) is read by the json module: a
    25 MB file of 300,000 nodes in about a second instead of half a minute."""
    if text.lstrip().startswith(("{", "[")):
        try:
            return check_depth(loads_json(text), source, error)
        except RecursionError:
            raise error(f"{source}: nested too deeply to read; flatten the document") from None
        except json.JSONDecodeError:
            pass  # YAML flow style, not JSON
        except ValueError as exc:
            raise error(f"{source}: {exc}") from None
    try:
        _count_values(text, source, error)
        loader = SafeLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if "*" in text:  # only an alias (``*name``) can expand or loop
                _check_nodes(node, source, error)
            return check_depth(loader.construct_document(node), source, error)
        finally:
            loader.dispose()
    except RecursionError:
        raise error(f"{source}: nested too deeply to read; flatten the document") from None
    except ValueError as exc:  # a value YAML resolved but Python cannot build (2001-02-30, 9 * 5000)
        raise error(f"{source}: a value cannot be read: {value_problem(exc)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        if "nesting depth" in problem:  # libyaml's own bound
            raise error(f"{source}: nested too deeply to read; flatten the document") from None
        raise error(f"{source}: invalid YAML{line}: {problem}") from None


def load_yaml_file(path: Path, what: str, error: type[IftError]) -> Any:
    return parse_yaml(read_text(path, what, error), str(path), error)
