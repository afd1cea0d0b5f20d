"""``itaclip`` command line: a thin layer over the Python API.

Sub-commands live in their own modules (imported only when used, so ``itaclip segment`` never
imports the web demo). Each module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C before :func:`main` runs (while this module's imports load): one line, exit 130,
    instead of a traceback through the import machinery. :func:`main` restores the default."""
    print("itaclip: interrupted", file=sys.stderr)
    raise SystemExit(130)


if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not when embedded with a handler of its own
    signal.signal(signal.SIGINT, _interrupted_while_starting)

import argparse  # noqa: E402 - after the handler, on purpose
import importlib  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402
from typing import Optional, Sequence  # noqa: E402

from ..engine.errors import ItaclipError, one_line  # noqa: E402

#: name → (module, one-line help)
COMMANDS = {
    "segment": ("itaclip.cli.segment", "segment images with any list of classes"),
    "eval": ("itaclip.cli.eval", "evaluate on a benchmark dataset (mIoU), resumable, torchrun-ready"),
    "texts": ("itaclip.cli.texts", "generate auxiliary texts (definitions, synonyms) for a vocabulary"),
    "bench": ("itaclip.cli.bench", "measure speed and memory per mode and device"),
    "demo": ("itaclip.cli.demo", "start the browser demo"),
    "label-studio": ("itaclip.cli.label_studio", "serve pre-annotations to Label Studio (ML backend API)"),
    "presets": ("itaclip.cli.presets", "list the presets, or print one preset's resolved settings"),
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="itaclip",
        description="Training-free open-vocabulary semantic segmentation (ITACLIP).",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"itaclip {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if argv and argv[0] == name:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(cmd)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        parser.exit(2)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command. Exit codes: 0 done; 1 some items failed (each reported in one line, the
    others finished); 2 nothing done (a bad option, input or environment: one-line error);
    130 interrupted (Ctrl-C, also while the libraries are still being imported)."""
    command, shown = "itaclip", warnings.showwarning
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C is a KeyboardInterrupt again
    try:
        args = parse_args(argv)
        command = f"itaclip {args.command}"
        warnings.showwarning = _warning_printer(command)
        module = importlib.import_module(COMMANDS[args.command][0])
        return int(module.run(args) or 0)
    except ItaclipError as exc:
        print(f"{command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `itaclip presets | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except (OSError, MemoryError) as exc:  # the environment: a full disk, a permission, memory
        print(f"{command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


def _warning_printer(command: str):
    """Warnings as one line each (``itaclip segment: warning: ...``), not Python's two-line format."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message).removeprefix("itaclip: ")
        print(f"{command}: warning: {text}", file=file or sys.stderr, flush=True)

    return show


if __name__ == "__main__":
    sys.exit(main())
