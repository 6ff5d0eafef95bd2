"""The ``ift`` command: one module per command (each adds its parser), and ``main``. Every
engine error becomes one line on stderr and exit code 2.

argparse (standard library) rather than click/typer: the command surface is small and this
keeps the core free of another dependency. Heavy imports happen inside the commands, not when
these modules load, so ``ift`` starts fast and Ctrl-C at any moment is one line.
"""

from __future__ import annotations

import argparse
import codecs
import io
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import suppress
from typing import NoReturn

from rich.markup import escape

from ..console import err
from ..errors import IftError

#: The commands, in the order ``ift --help`` lists them: each module's ``add_parser(sub)``.
COMMANDS = ("run", "chat", "checks", "train", "export", "serve", "templates", "eval")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="ift", description="Instruction fine-tuning and composed tasks on fine-tuned models."
    )
    parser.add_argument("--version", action="version", version=f"ift_engine {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f".{name}", __name__).add_parser(sub)
    return parser


def quiet_weight_loading() -> None:
    """transformers 5 draws a progress bar for every weight load; the CLI shows its own progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:  # imported before (main called from Python): tell it directly
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()


def printable(exc: UnicodeError) -> tuple[str | bytes, int]:
    """The error handler of standard output and error: lone surrogates (undecodable argv bytes)
    go out as the bytes they were; a character the terminal's encoding lacks (``·`` under
    ``LC_ALL=C`` with an ASCII encoding) as ``?``."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    try:
        return codecs.lookup_error("surrogateescape")(exc)
    except UnicodeError:
        return codecs.replace_errors(exc)


codecs.register_error("ift_printable", printable)


def check_working_folder() -> None:
    try:
        os.getcwd()
    except FileNotFoundError:
        raise IftError("the current folder no longer exists (deleted?); cd into an existing folder") from None


def quiet_stdout() -> None:
    """The reader of standard output left (``| head -1``): send the rest nowhere, so that the
    flush at exit does not fail either."""
    with suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def configure_output() -> None:
    """Standard streams that print every character, warnings and logs as plain lines."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="ift_printable")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    quiet_weight_loading()
    warnings.formatwarning = lambda message, *rest, **kw: f"warning: {message}\n"
    logging.basicConfig(format="%(message)s")
    logging.getLogger("ift_engine").setLevel(logging.INFO)


#: The exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    # Everything runs inside the try, heavy imports included (they happen in the commands, not
    # when this module loads), so Ctrl-C at any moment is one line and exit code 130.
    try:
        args = build_parser().parse_args(argv)
        configure_output()
        check_working_folder()
        code = args.func(args)
        if sys.stdout is not None:  # None: started with standard output closed (`>&-`)
            sys.stdout.flush()  # here, where a full disk is still reported
        return code
    except IftError as exc:
        err.print(f"[bold red]error:[/] {escape(' '.join(str(exc).split()))}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # `ift graph ... | head`: the reader left, nothing to report
        quiet_stdout()
        return 0
    except OSError as exc:  # the file system or a stream refused (a full disk, a name too long)
        where = f"{exc.filename}: " if exc.filename else "cannot write the output: "
        err.print(f"[bold red]error:[/] {escape(where)}{escape(exc.strerror or str(exc))}")
        quiet_stdout()
        return 2
    except Exception as exc:  # a last resort: every known failure is an IftError raised at its cause
        if os.environ.get("IFT_ENGINE_DEBUG"):
            raise
        err.print(
            f"[bold red]error:[/] internal error: {escape(type(exc).__name__)}: {escape(str(exc)[:300])}. "
            "This is a bug in ift_engine: please report it with the command you ran "
            "(IFT_ENGINE_DEBUG=1 shows the traceback)."
        )
        return 2


def run() -> NoReturn:
    """The ``ift`` command: ``main()``, then exit with its status. An interrupted command leaves
    at once (``os._exit``) once its output is flushed. Under ``python -m`` (CPython 3.11 here),
    a Ctrl-C that lands in code a C extension runs through ``PyRun_String`` (pybind11's
    ``py::exec``, which torch's start-up uses) leaves CPython's "unhandled KeyboardInterrupt"
    flag set although ``main`` handled it, and the interpreter then kills itself with SIGINT
    at exit instead of returning 130. What an interrupted command skips: atexit handlers (the
    command's own clean-up, staging folders and Ray included, ran in ``main`` already)."""
    code = main()
    if code == INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)
