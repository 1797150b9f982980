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


def _add_selection(p: argparse.ArgumentParser) -> None:
    """What query and flamegraph read: one service over one time range, optionally one version and thread."""
    p.add_argument("--storage", required=True, metavar="URL")
    p.add_argument("--service", required=True)
    p.add_argument("--from", dest="start", required=True, metavar="T", help="ISO 8601 (UTC) or relative: now, -1h, -2d")
    p.add_argument("--to", dest="end", default="now", metavar="T")
    p.add_argument("--version")
    p.add_argument("--thread", help="keep only samples of this thread name")


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
    _add_selection(p)
    p.add_argument("--format", choices=["pprof", "collapsed", "json", "top"], default="top")
    p.add_argument("--sample-type", help="for collapsed/top: which sample type (default: cpu)")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("flamegraph", help="a time range as a self-contained flame graph page")
    _add_selection(p)
    p.add_argument("--sample-type", help="sample type the page opens with (default: cpu)")
    p.add_argument("-o", "--output", required=True, metavar="FILE.html")
    p.set_defaults(func=cmd_flamegraph)

    p = sub.add_parser("diff", help="what changed between two ranges")
    p.add_argument("--storage", required=True, metavar="URL")
    p.add_argument("--service", required=True)
    p.add_argument("--base", required=True, metavar="T..T")
    p.add_argument("--target", metavar="T..T", help="default: the base range (to compare two versions in it)")
    p.add_argument("--version", help="keep only this version on both sides")
    p.add_argument("--base-version", metavar="V")
    p.add_argument("--target-version", metavar="V")
    p.add_argument("--thread", help="keep only samples of this thread name")
    p.add_argument("--sample-type", help="which sample type to compare (default: cpu)")
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
    p.add_argument("--seconds", type=float, default=5.0, help="how long each release runs")
    p.add_argument("--out", default="cloudprof-demo", metavar="DIR", help="where the pages go")
    p.set_defaults(func=cmd_demo)
    return parser


# Options whose value may be a relative time such as -1h, which argparse would take for an option.
_TIME_OPTIONS = frozenset({"--from", "--to", "--base", "--target", "--hour"})


def _attach_time_values(argv: Sequence[str]) -> list[str]:
    """`--from -1h` -> `--from=-1h` (up to a `--`, after which the words belong to the profiled command)."""
    out: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            out.extend(words[i:])
            break
        if word in _TIME_OPTIONS and i + 1 < len(words) and words[i + 1].startswith("-") and words[i + 1] != "--":
            out.append(f"{word}={words[i + 1]}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_time_values(sys.argv[1:] if argv is None else argv))
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
    from cloudprof.agent.autostart import run

    cmd = list(args.cmd)
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        print("cloudprof run: nothing to run; usage: cloudprof run [--service S] [--storage URL] -- CMD ...",
              file=sys.stderr)
        return 2
    return run(cmd, service=args.service, storage=args.storage)


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
    bar = _ProgressBar("aggregate") if sys.stderr.isatty() else None
    report = aggregate(store, partitions, workers=workers, progress=bar, on_inputs=bar.inputs if bar else None)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(report.summary())
    return 1 if report.failures else 0


class _ProgressBar:
    """A one-line bar on stderr for long work (only on a TTY): partitions done of total, inputs read."""

    def __init__(self, label: str) -> None:
        self.label, self.done, self.total, self.read = label, 0, 0, 0

    def __call__(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        self._show()

    def inputs(self, count: int) -> None:
        self.read += count
        if count != 1 or self.read % 25 == 0:
            self._show()

    def _show(self) -> None:
        width = 30
        filled = width * self.done // max(self.total, 1)
        print(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} partitions, "
              f"{self.read} inputs", end="", file=sys.stderr, flush=True)


def _emit(output: str | None, data: bytes, what: str) -> None:
    """Write to FILE or stdout; binary pprof never goes to a terminal.

    A regular file is replaced whole or not at all (temp file, then rename), with the
    mode a plain open would give it. Anything else that exists (/dev/stdout, a pipe,
    a device) is written in place: renaming over it would replace it with a file.
    """
    import os
    import stat
    import tempfile

    if not output or output == "-":
        if what == "pprof" and sys.stdout.isatty():
            raise CloudprofError("pprof output is binary: pass -o FILE.pb.gz (or pipe it)")
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    tmp = None
    try:
        if os.path.exists(output) and not os.path.isfile(output) and not os.path.isdir(output):
            with open(output, "wb") as fh:
                fh.write(data)
            return
        if os.path.isfile(output):
            mode = stat.S_IMODE(os.stat(output).st_mode)
        else:
            umask = os.umask(0)  # the only way to read it; set straight back
            os.umask(umask)
            mode = 0o666 & ~umask
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(output)), prefix=".cloudprof-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, output)
        tmp = None
    except OSError as exc:
        raise CloudprofError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _selection(args: argparse.Namespace, start, end, version=None):
    from cloudprof.query import Selection

    return Selection(args.service, start, end, version=version if version is not None else args.version,
                     thread=args.thread)


def _cost(stats) -> str:
    text = (f"{stats.hours} hours ({stats.hours_merged} merged, {stats.hours_raw} from raw uploads), "
            f"{stats.objects_read} objects read, {stats.bytes_read / 1e6:.1f} MB")
    if stats.skipped:
        text += f"; skipped {stats.skipped} unreadable raw uploads (the aggregator quarantines them)"
    return text


def _span(start, end) -> str:
    return f"{start:%Y-%m-%d %H:%M} \u2192 {end:%Y-%m-%d %H:%M} UTC"


def cmd_query(args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timezone

    from cloudprof.query import QueryStats, query_profile, query_tree
    from cloudprof.render import format_top
    from cloudprof.storage import open_store
    from cloudprof.times import parse_time

    now = datetime.now(timezone.utc)
    sel = _selection(args, parse_time(args.start, now=now), parse_time(args.end, now=now))
    store = open_store(args.storage)
    stats = QueryStats()
    if args.format == "pprof":
        from cloudprof.pprof import encode

        data = encode(query_profile(store, sel, stats))
    else:
        tree = query_tree(store, sel, stats)
        index = tree.type_index(args.sample_type)
        sample_type = tree.types[index]
        if args.format == "collapsed":
            data = tree.collapsed(sample_type).encode()
        elif args.format == "json":
            doc = {"service": sel.service, "from": sel.start.isoformat(), "to": sel.end.isoformat(),
                   "version": sel.version, "thread": sel.thread, "query": stats.to_dict(), **tree.to_nested()}
            data = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
        else:
            data = format_top(tree.function_stats(sample_type), sample_type, total=tree.grand_total(index)).encode()
    _emit(args.output, data, args.format)
    if args.output and args.output != "-":
        print(f"wrote {args.output}: {_cost(stats)}", file=sys.stderr)
    return 0


def cmd_flamegraph(args: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from cloudprof.query import QueryStats, query_tree
    from cloudprof.render import render_flamegraph_html
    from cloudprof.storage import open_store
    from cloudprof.times import parse_time

    now = datetime.now(timezone.utc)
    sel = _selection(args, parse_time(args.start, now=now), parse_time(args.end, now=now))
    stats = QueryStats()
    tree = query_tree(open_store(args.storage), sel, stats)
    facts = [("range", _span(sel.start, sel.end))]
    if sel.version:
        facts.append(("version", sel.version))
    if sel.thread:
        facts.append(("thread", sel.thread))
    facts.append(("read", f"{stats.hours} hours, {stats.profiles} profiles"))
    page = render_flamegraph_html(tree, title=f"{sel.service} \u00b7 {sel.kind}", facts=facts, default_type=args.sample_type,
                                  footer=f"cloudprof \u00b7 {args.storage} \u00b7 generated {now:%Y-%m-%d %H:%M} UTC")
    _emit(args.output, page.encode(), "html")
    print(f"wrote {args.output}: {len(tree):,} frames; {_cost(stats)}", file=sys.stderr)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    import json
    from datetime import datetime, timezone

    from cloudprof.errors import ConfigError
    from cloudprof.query import QueryStats, movers, parse_range, query_diff_tree
    from cloudprof.render import format_movers, render_diff_html
    from cloudprof.storage import open_store

    now = datetime.now(timezone.utc)
    base_range = parse_range(args.base, now=now)
    target_range = parse_range(args.target, now=now) if args.target else base_range
    base = _selection(args, *base_range, version=args.base_version)
    target = _selection(args, *target_range, version=args.target_version)
    if base == target:
        raise ConfigError("base and target are the same: give two ranges (--base, --target) or two versions "
                          "(--base-version, --target-version)")
    base_stats, target_stats = QueryStats(), QueryStats()
    tree = query_diff_tree(open_store(args.storage), base, target, base_stats, target_stats)
    index = tree.type_index(args.sample_type)
    sample_type = tree.types[index]
    moves = movers(tree, sample_type)

    def side(sel) -> str:
        return _span(sel.start, sel.end) + (f" v{sel.version}" if sel.version else "")

    if args.format == "html":
        facts = [("base", side(base)), ("target", side(target))]
        data = render_diff_html(tree, title=f"{args.service} \u00b7 diff", facts=facts, default_type=sample_type,
                                footer=f"cloudprof \u00b7 {args.storage} \u00b7 generated {now:%Y-%m-%d %H:%M} UTC").encode()
    elif args.format == "json":
        doc = {"service": args.service, "sample_type": sample_type,
               "base": {"from": base.start.isoformat(), "to": base.end.isoformat(), "version": base.version,
                        "total": tree.grand_total(index, 0), "query": base_stats.to_dict()},
               "target": {"from": target.start.isoformat(), "to": target.end.isoformat(), "version": target.version,
                          "total": tree.grand_total(index, 1), "query": target_stats.to_dict()},
               "functions": [m.to_dict() for m in moves]}
        data = (json.dumps(doc, indent=1) + "\n").encode()
    else:
        data = (f"base:   {side(base)}\ntarget: {side(target)}\n" + format_movers(moves, sample_type)).encode()
    _emit(args.output, data, args.format)
    if args.output and args.output != "-":
        if (base.start, base.end) == (target.start, target.end):
            print(f"wrote {args.output}: one read of the range for both sides: {_cost(base_stats)}", file=sys.stderr)
        else:
            print(f"wrote {args.output}: base {_cost(base_stats)}; target {_cost(target_stats)}", file=sys.stderr)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from cloudprof.pprof import decode

    bad = 0
    for name in args.files:
        try:
            with open(name, "rb") as fh:
                decode(fh.read())
        except (CloudprofError, OSError) as exc:
            bad += 1
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            print(f"{name}: {reason}")
    return 1 if bad else 0


def cmd_merge(args: argparse.Namespace) -> int:
    from cloudprof.pprof import encode, merge_files

    merged = merge_files(args.files)  # parallel processes for large merges; errors name the file
    _emit(args.output, encode(merged, compress=not args.output.endswith(".pb")), "pprof")
    return 0


_COLLAPSED_EXTENSIONS = (".txt", ".folded", ".collapsed")


def cmd_convert(args: argparse.Namespace) -> int:
    """pprof <-> collapsed; the input kind is sniffed (gzip magic, then protobuf), the output by --to or name."""
    from cloudprof.errors import ProfileError
    from cloudprof.pprof import decode, encode, from_collapsed, to_collapsed

    try:
        with open(args.input, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ProfileError(f"{args.input}: {exc.strerror or exc}") from None
    profile = None
    if data[:2] == b"\x1f\x8b" or not args.input.lower().endswith(_COLLAPSED_EXTENSIONS):
        try:
            profile = decode(data)
        except ProfileError as exc:
            if data[:2] == b"\x1f\x8b" or args.input.lower().endswith((".pb", ".pprof", ".prof")):
                raise ProfileError(f"{args.input}: {exc}") from None
    if profile is None:
        try:
            profile = from_collapsed(data)
        except ProfileError as exc:
            raise ProfileError(f"{args.input}: {exc}") from None
    to = args.to or ("collapsed" if args.output.lower().endswith(_COLLAPSED_EXTENSIONS) else "pprof")
    if to == "collapsed":
        out = to_collapsed(profile, args.sample_type).encode("utf-8")
    else:
        if args.sample_type:
            raise ProfileError("--sample-type applies to collapsed output only")
        out = encode(profile, compress=not args.output.endswith(".pb"))
    _emit(args.output, out, to)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cloudprof.demo import SERVICE, run_demo

    print(f"cloudprof demo: profiling {SERVICE} release 1.0, then 1.1, for {args.seconds:g} s each "
          f"into {args.storage}", file=sys.stderr)
    result = run_demo(args.storage, args.seconds, Path(args.out))
    print(result.top)
    print(result.movers)
    print(result.summary)
    for page in result.pages:
        print(f"open {page}")
    print(f"next: cloudprof flamegraph --storage {args.storage} --service {SERVICE} --from -1h -o flame.html")
    return 0
