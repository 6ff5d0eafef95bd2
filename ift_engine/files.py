"""Writing outputs without ever losing a user's data.

Every file or folder the engine produces is written into a temporary sibling and renamed into
place once complete, so a killed process leaves either the old output or the new one, never half
of one. A folder is replaced only when it is empty or holds a previous output of the same kind
(recognised by its manifest) and the caller allowed it; the engine never deletes anything it did
not create. Failures are one-line ``OutputError``s naming the path and what to do.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from .errors import IftError


class OutputError(IftError):
    """An output cannot be written where it was asked for."""


def json_text(value: Any, indent: int | None = None, allow_nan: bool = True) -> str:
    """JSON for a file: readable UTF-8 where possible; text that UTF-8 cannot hold (lone
    surrogates, e.g. from undecodable command-line bytes) as JSON escapes, which read back to the
    same value."""
    text = json.dumps(value, ensure_ascii=False, indent=indent, allow_nan=allow_nan)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, indent=indent, allow_nan=allow_nan)
    return text


def describe_os_error(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def check_output_file(path: Path, what: str, overwrite: bool = True) -> None:
    """Refuse, before any work, a target that is a folder or not a regular file (a device such
    as /dev/full, a FIFO), or whose folder is a file; without ``overwrite``, also a non-empty
    file that is already there."""
    if path.is_dir():
        raise OutputError(f"{path}: the {what} path is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: the {what} path is not a regular file; give a file name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, not a folder")
    if not overwrite and path.is_file() and path.stat().st_size:
        raise OutputError(
            f"{path}: the {what} file exists; pass --overwrite to replace it (nothing was changed)"
        )


def make_parent(path: Path, what: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"{path}: cannot create the folder of the {what}: {describe_os_error(exc)}"
        ) from None


def write_file(
    path: str | Path,
    data: str | bytes | Callable[[Path], None],
    what: str = "output",
    overwrite: bool = False,
) -> None:
    """Write ``data`` (text, bytes, or a function that writes the file it is given) to a
    temporary sibling of ``path``, flush it to disk and rename it into place. An existing
    non-empty file is replaced only with ``overwrite``."""
    path = Path(path)
    check_output_file(path, what, overwrite)
    make_parent(path, what)
    try:
        # The suffix is kept: writers such as matplotlib choose the format from it.
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what}: {describe_os_error(exc)}") from None
    staging = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(data, str):
                file.write(data.encode("utf-8"))
            elif isinstance(data, bytes):
                file.write(data)
        if callable(data):
            data(staging)
        with open(staging, "rb+") as file:
            os.fsync(file.fileno())
        os.chmod(staging, 0o644)
        os.replace(staging, path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the {what}: {describe_os_error(exc)}") from None
    finally:
        with suppress(FileNotFoundError):
            staging.unlink()


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


def check_output_folder(
    out: Path,
    what: str,
    *,
    is_previous: Callable[[Path], bool],
    overwrite: bool,
    protected: tuple[Path, ...] = (),
) -> None:
    """Refuse an output folder the engine may not fill: a file, the current folder or one of
    its parents, a folder in ``protected`` (e.g. the source model) or one holding it, and a
    non-empty folder unless ``overwrite`` is set and it holds a previous output of this kind."""
    resolved = out.resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: the {what} folder is a file; give a new folder name")
    if resolved == Path.cwd().resolve() or resolved in Path.cwd().resolve().parents:
        raise OutputError(
            f"{out}: the {what} folder would replace the current folder; give a new folder name"
        )
    for path in protected:
        inner = path.resolve()
        if inner == resolved or resolved in inner.parents:
            raise OutputError(f"{out}: the {what} would replace {path}, which it reads; give a new folder")
    if not out.exists() or is_empty_folder(out):
        return
    if not is_previous(out):
        raise OutputError(
            f"{out}: the folder is not empty and holds no previous {what}; give a new or empty folder "
            "(nothing there was changed)"
        )
    if not overwrite:
        raise OutputError(f"{out}: a previous {what} is there; pass --overwrite to replace it")


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def staging_folder(out: Path, label: str) -> Path:
    """A new temporary sibling of ``out`` to build an output in, named after this process.
    Staging folders of ``out`` left by killed processes (of this machine) are removed first."""
    make_parent(out, label)
    prefix = f".{out.name}.{label}-"
    for path in out.parent.glob(f"{prefix}*"):
        pid = path.name[len(prefix) :].partition("-")[0]
        if path.is_dir() and pid.isdigit() and not is_running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"{out}: cannot create a folder beside it: {describe_os_error(exc)}") from None


def move_into_place(staging: Path, out: Path) -> None:
    """Rename a finished ``staging`` folder to ``out``. An existing ``out`` (already checked by
    ``check_output_folder``) is first moved aside and removed only once the new one is in place."""
    old = None
    if out.exists() and not is_empty_folder(out):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.rename(out, old / out.name)
    elif out.exists():
        out.rmdir()  # empty: nothing is lost
    try:
        os.rename(staging, out)
    except OSError:
        if old is not None:
            os.rename(old / out.name, out)
            old.rmdir()
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
