"""The `cloudprof` command: thin commands over the library.

Exit codes: 0 ok, 1 error with a one-line message, 2 usage error.
Each command imports what it needs when it runs, so `cloudprof validate`
does not pay for boto3.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from cloudprof.errors import CloudprofError

__all__ = ["main"]


def _add_range(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", required=True, metavar="T", help="ISO 8601 (UTC) or relative: now, -1h, -2d")
    p.add_argument("--to", dest="end", default="now", metavar="T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudprof", description="Always-on profiling for Python services.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="profile a program without code changes")
    p.add_argument("--service")
    p.add_argument("--storage", metavar="URL")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("aggregate", help="merge raw uploads per service, hour and kind")
    p.add_argument("--storage", required=True, metavar="URL")
    p.add_argument("--service")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--hour", metavar="YYYY-MM-DDTHH")
    which.add_argument("--pending", action="store_true", help="every partition with inputs not yet merged")
    p.add_argument("--from", dest="start", metavar="T")
    p.add_argument("--to", dest="end", metavar="T")
    p.add_argument("--workers", type=int, default=0, metavar="N", help="partitions merged in parallel (default: CPUs, max 4)")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("query", help="a time range as pprof, collapsed, JSON or a top table")
    p.add_argument("--storage", required=True, metavar="URL")
    p.add_argument("--service", required=True)
    _add_range(p)
    p.add_argument("--version")
    p.add_argument("--thread", help="keep only samples of this thread name")
    p.add_argument("--format", choices=["pprof", "collapsed", "json", "top"], default="top")
    p.add_argument("--sample-type", help="for collapsed/top: which sample type (default: cpu)")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("flamegraph", help="a time range as a self-contained flame graph page")
    p.add_argument("--storage", required=True, metavar="URL")
    p.add_argument("--service", required=True)
    _add_range(p)
    p.add_argument("--version")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html")
    p.set_defaults(func=cmd_flamegraph)

    p = sub.add_parser("diff", help="what changed between two ranges")
    p.add_argument("--storage", required=True, metavar="URL")
    p.add_argument("--service", required=True)
    p.add_argument("--base", required=True, metavar="T..T")
    p.add_argument("--target", required=True, metavar="T..T")
    p.add_argument("--format", choices=["html", "json", "top"], default="top")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("validate", help="check pprof files; one line per bad file")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("merge", help="merge pprof files, like go tool pprof -proto")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("-o", "--output", required=True, metavar="OUT")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("convert", help="pprof <-> collapsed, by extension or --to")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--to", choices=["pprof", "collapsed"])
    p.add_argument("--sample-type", help="which sample type to write as collapsed counts")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("demo", help="the whole journey on the local default")
    p.add_argument("--storage", default="file://.cloudprof", metavar="URL")
    p.add_argument("--seconds", type=float, default=5.0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args) or 0
    except CloudprofError as exc:
        print(f"cloudprof {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# --- commands (each owned by the part it drives) -----------------------------


def cmd_run(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof run")


def cmd_aggregate(args: argparse.Namespace) -> int:
    import os

    from cloudprof.aggregator import aggregate, find_pending, list_partitions
    from cloudprof.storage import keys, open_store
    from cloudprof.times import hours_between, parse_time

    if args.service:
        keys.validate_service(args.service)
    if args.hour:
        hours = [parse_time(args.hour)]
    elif args.start or args.end:
        hours = hours_between(parse_time(args.start or "-1d"), parse_time(args.end or "now"))
    else:
        hours = None
    store = open_store(args.storage)
    if args.pending or hours is None:
        partitions = find_pending(store, service=args.service, hours=hours)
    else:  # every partition of those hours; a rerun folds in only what its manifest lacks
        partitions = sorted(list_partitions(store, service=args.service, hours=hours))
    workers = args.workers or min(4, os.cpu_count() or 1)
    report = aggregate(store, partitions, workers=workers, progress=_progress_bar("aggregate") if sys.stderr.isatty() else None)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(report.summary())
    return 1 if report.failures else 0


def _progress_bar(label: str):
    """A one-line bar on stderr for long work (only on a TTY)."""
    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=sys.stderr, flush=True)

    return show


def cmd_query(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof query")


def cmd_flamegraph(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof flamegraph")


def cmd_diff(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof diff")


def cmd_validate(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof validate")


def cmd_merge(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof merge")


def cmd_convert(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof convert")


def cmd_demo(args: argparse.Namespace) -> int:
    raise NotImplementedError("cloudprof demo")
