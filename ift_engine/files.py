"""Writing outputs without ever losing a user's data.

Every file or folder the engine produces is written into a temporary sibling and renamed into
place once complete, so a killed process leaves either the old output or the new one, never half
of one. A folder is replaced only when it is empty, or holds a previous output of the same kind
and nothing but the files its manifest lists (``write_manifest``), and the caller allowed it;
the engine never deletes anything it did not create. Output folders are locked while a run fills
them (``OutputLock``); staging folders carry a marker file, and only the holder of the lock
removes those that dead runs left. Failures are one-line ``OutputError``s naming the path and
what to do.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

from .documents import read_bytes
from .errors import IftError

#: The file inside every staging folder the engine makes: how a dead run's folder is known.
STAGING_MARKER = ".ift-staging.json"
#: A manifest is a few kilobytes; anything far larger is not one.
MAX_MANIFEST_BYTES = 16 * 2**20


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


def check_under_folder(path: Path, what: str) -> None:
    """Refuse an output path under something that is not a folder (``afile/sub`` where
    ``afile`` is a file, or a broken link): its nearest existing parent must be a folder. Every
    output is checked so, when the command starts and wherever its folder is made."""
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                kind = "a file, not a folder" if parent.is_file() else "not a folder"
                raise OutputError(f"{path}: {parent} is {kind}; choose another path for the {what}")
            return


def check_output_file(path: Path, what: str, overwrite: bool = True) -> None:
    """Refuse, before any work, a target that is a folder or not a regular file (a device such
    as /dev/full, a FIFO), or that lies under a file; without ``overwrite``, also a non-empty
    file that is already there."""
    check_under_folder(path, what)
    if path.is_dir():
        raise OutputError(f"{path}: the {what} path is a folder; give a file name")
    if path.exists() and not path.is_file():
        raise OutputError(f"{path}: the {what} path is not a regular file; give a file name")
    if not overwrite and path.is_file() and path.stat().st_size:
        raise OutputError(
            f"{path}: the {what} file exists; pass --overwrite to replace it (nothing was changed)"
        )


def make_parent(path: Path, what: str) -> None:
    check_under_folder(path, what)
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


def files_fingerprint(path: Path) -> str:
    """A digest of every file under ``path``: name, size, modification and change times and
    inode. A retrained or re-exported model gets a new fingerprint without hashing gigabytes of
    weights, even when a copy keeps the old size and modification time (the change time and
    inode cannot be set back by a copy)."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        stat = file.stat()
        name = file.relative_to(path) if file != path else file.name
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}:{stat.st_ino}\n".encode())
    return digest.hexdigest()


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and next(path.iterdir(), None) is None


def folder_entries(folder: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every file, link and folder under ``folder`` (links not followed), as sorted relative
    POSIX paths; the top-level entries named in ``skip`` and what they hold are left out."""
    found: list[str] = []
    for root, folders, files in os.walk(folder):
        here = Path(root).relative_to(folder)
        if here == Path("."):
            folders[:] = [name for name in folders if name not in skip]
            files = [name for name in files if name not in skip]
        found += [(here / name).as_posix() for name in (*folders, *files)]
    return sorted(found)


def write_manifest(
    folder: Path, name: str, manifest: dict[str, Any], skip: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Write ``manifest`` to ``folder / name`` with, under ``files``, every entry of the folder
    (the manifest included, ``skip`` left out): all that a later ``--overwrite`` may replace.
    Returns what was written."""
    written = {**manifest, "files": sorted({*folder_entries(folder, skip), name})}
    (folder / name).write_text(json.dumps(written, indent=2, ensure_ascii=False))
    return written


def foreign_entries(folder: Path, manifest: Mapping[str, Any]) -> list[str] | None:
    """The entries of ``folder`` its manifest does not list (the engine did not write them), or
    None when the manifest has no list of files (written before the engine kept one)."""
    listed = manifest.get("files")
    if not isinstance(listed, list) or not all(isinstance(item, str) for item in listed):
        return None
    known = set(listed)
    return [entry for entry in folder_entries(folder) if entry not in known]


def read_json_mapping(path: Path) -> dict[str, Any] | None:
    """A small JSON file the engine wrote (a manifest, a run record) as a mapping, or None when
    it is missing, not a regular file, too large or not a JSON object."""
    try:
        value = json.loads(read_bytes(path, "file", OutputError, limit=MAX_MANIFEST_BYTES))
    except (OutputError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def check_output_folder(
    out: Path,
    what: str,
    *,
    previous: Callable[[Path], Mapping[str, Any] | None],
    overwrite: bool,
    protected: tuple[Path, ...] = (),
) -> None:
    """Refuse an output folder the engine may not fill: a file, the current folder or one of
    its parents, a folder in ``protected`` (the source model, a dataset) or one holding it, and
    a non-empty folder unless ``overwrite`` is set and it holds only a previous output of this
    kind (``previous`` returns its manifest) and the files that output's manifest lists."""
    check_under_folder(out, what)
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
    manifest = previous(out)
    if manifest is None:
        raise OutputError(
            f"{out}: the folder is not empty and holds no previous {what}; give a new or empty folder "
            "(nothing there was changed)"
        )
    foreign = foreign_entries(out, manifest)
    if foreign is None:
        raise OutputError(
            f"{out}: the previous {what} there has no list of the files it wrote (an older ift_engine "
            "made it), so it is not replaced; move it away or give a new folder"
        )
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(
            f"{out}: holds files the previous {what} did not write ({shown}); move them away or give "
            "a new folder (nothing there was changed)"
        )
    if not overwrite:
        raise OutputError(f"{out}: a previous {what} is there; pass --overwrite to replace it")


def lock_file(fd: int, message: str, wait: bool = False) -> None:
    """An exclusive advisory lock on an open file: taken at once or ``OutputError(message)``
    (with ``wait``, once the holder lets go)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise OutputError(message) from None


class OutputLock:
    """An exclusive lock on an output folder while a run fills it: a ``flock`` (as on batch
    outputs) on ``.NAME.lock`` beside it, since the folder itself is replaced by a rename. A
    second process fails at once naming the folder. Whoever takes the lock removes what dead
    runs left for this output (see ``remove_dead_staging``); the lock file goes on release."""

    def __init__(self, out: Path, what: str, wait: bool = False) -> None:
        self.out = out
        self.what = what
        self.wait = wait
        self.path = out.parent / f".{out.name}.lock"
        self._fd = -1

    def __enter__(self) -> OutputLock:
        make_parent(self.out, self.what)
        while self._fd < 0:
            fd = self._open()
            try:
                lock_file(fd, self.busy_message, self.wait)
            except OutputError:
                os.close(fd)
                raise
            # The previous holder removes the file on release: hold the one that is there now.
            if self._is_current(fd):
                self._fd = fd
            else:
                os.close(fd)
        remove_dead_staging(self.out)
        return self

    @property
    def busy_message(self) -> str:
        return (
            f"{self.out}: another process is writing the {self.what} there; wait for it to finish "
            "or choose another folder"
        )

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot lock the {self.what}: {describe_os_error(exc)}") from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OutputError(f"{self.path}: not a regular file; move it away (the {self.what} lock)")
        return fd

    def _is_current(self, fd: int) -> bool:
        try:
            return os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            with suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = -1


def _staging_record(path: Path) -> dict[str, Any] | None:
    """What the marker inside an engine's staging folder says, or None for any other path."""
    marker = path / STAGING_MARKER
    if path.is_symlink() or not path.is_dir() or marker.is_symlink() or not marker.is_file():
        return None
    try:
        with marker.open("rb") as file:
            record = json.loads(file.read(4096))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def remove_dead_staging(out: Path) -> None:
    """Remove the staging folders of ``out`` that dead runs left (the caller holds ``out``'s
    lock, so no live run owns one). They are recognised by the marker the engine writes inside
    them, never by name. A previous output that a killed run had moved aside, with nothing put
    in its place, is moved back."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.*"):
        record = _staging_record(path)
        if record is None or record.get("output") != out.name:
            continue
        kept = path / out.name
        if record.get("kind") == "replaced" and kept.is_dir() and not out.exists():
            os.rename(kept, out)
        shutil.rmtree(path, ignore_errors=True)


def staging_folder(out: Path, label: str) -> Path:
    """A new temporary sibling of ``out`` to build an output in, marked as the engine's (the
    caller holds ``out``'s ``OutputLock``)."""
    make_parent(out, label)
    try:
        path = Path(tempfile.mkdtemp(prefix=f".{out.name}.{label}-", dir=out.parent))
        (path / STAGING_MARKER).write_text(json.dumps({"output": out.name, "kind": label}))
    except OSError as exc:
        raise OutputError(f"{out}: cannot create a folder beside it: {describe_os_error(exc)}") from None
    return path


def move_into_place(staging: Path, out: Path) -> None:
    """Rename a finished ``staging`` folder to ``out``. An existing ``out`` (already checked by
    ``check_output_folder``) is first moved aside and removed only once the new one is in place."""
    old = None
    if out.exists() and not is_empty_folder(out):
        old = staging_folder(out, "replaced")
        os.rename(out, old / out.name)
    elif out.exists():
        out.rmdir()  # empty: nothing is lost
    try:
        os.rename(staging, out)
    except OSError:
        if old is not None:
            os.rename(old / out.name, out)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
