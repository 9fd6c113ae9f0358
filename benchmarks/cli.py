"""``autorec-bench`` (also ``python -m benchmarks``): one subcommand per module in
``benchmarks/commands/``, imported lazily so that ``autorec-bench datasets`` never imports a framework.

A command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from autorec.errors import AutoRecBenchError

# subcommand -> module under benchmarks.commands
COMMANDS = {
    "datasets": "datasets",
    "split": "split",
    "run": "run",
    "sweep": "sweep",
    "tune": "tune",
    "report": "report",
    "verify": "verify",
    "summary": "summary",
}


def _load(name: str):
    return importlib.import_module(f"benchmarks.commands.{COMMANDS[name]}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autorec-bench",
        description="AutoRec vs matrix factorization on MovieLens: datasets, shared splits, runs, "
        "resumable sweeps, tuning, reports and the verdict.  `autorec-bench COMMAND -h` "
        "for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        mod = _load(name) if (only is None or only == name) else None
        if mod is None:
            sub.add_parser(name)
            continue
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    only = argv[0] if argv and argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    terminated: list[int] = []

    def on_term(signum: int, _frame: object) -> None:
        # SIGTERM (kill, a scheduler's stop) takes the same way out as Ctrl-C: workers stopped,
        # claims released, finished runs kept and said so; exit 143 as for a plain SIGTERM
        terminated.append(signum)
        raise KeyboardInterrupt

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_term) if main_thread else None
    try:
        return int(args._run(args) or 0)
    except AutoRecBenchError as exc:
        print(f"autorec-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"autorec-bench {args.command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 128 + signal.SIGTERM if terminated else 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
