"""``zoo cache ls | rm PATTERN | verify``: inspect and manage the download cache."""

from __future__ import annotations

import argparse
import datetime as _dt
from collections import Counter
from pathlib import Path

from zoo.cli.output import human_size, print_json, print_table
from zoo.hub import (
    CacheEntry,
    VerifyResult,
    cache_dir,
    cache_entries,
    forget_matching,
    remove_cached,
    verify_cache,
    zoo_home,
)
from zoo.weights import verify_checkpoints
from zoo.weights.checkpoints import checkpoint_name
from zoo.weights.derived import (
    CHECKPOINT,
    MEMBER,
    DerivedFile,
    derived_files,
    derived_from,
    matches,
    remove_derived,
)
from zoo.weights.usable import UsableCheck


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``ls``, ``rm`` and ``verify`` sub-commands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")

    parser.description = (
        f"Manage downloaded files (cache directory: $ZOO_HOME/files, now {cache_dir()})."
    )
    sub = parser.add_subparsers(dest="cache_command", metavar="{ls,rm,verify}")
    sub.required = True
    sub.add_parser(
        "ls", parents=[common],
        help="list downloads (and partial ones), converted checkpoints and extracted members",
    )  # fmt: skip
    rm = sub.add_parser("rm", parents=[common], help="remove cached files matching a pattern")
    rm.add_argument(
        "pattern",
        help="fnmatch pattern on a download's filename (or cache key), a checkpoint's arch.tag "
        "(or tag), or a member's name, e.g. 'resnet50*'",
    )
    rm.add_argument(
        "--forget",
        action="store_true",
        help="also forget hashes recorded on first use (accept changed upstream), and remove "
        "the checkpoints and members made from what is forgotten",
    )
    verify = sub.add_parser(
        "verify", parents=[common],
        help="re-hash cached files, load converted checkpoints, convert cached downloads",
    )  # fmt: skip
    verify.add_argument(
        "--hashes-only",
        action="store_true",
        help="only re-hash (fast, no torch): skip loading checkpoints and converting downloads",
    )


def _entry_json(entry: CacheEntry) -> dict[str, object]:
    return {
        "filename": entry.filename,
        "key": entry.key,
        "path": str(entry.path),
        "size": entry.size,
        "mtime": entry.mtime,
        "sha256": entry.sha256,
        "partial": entry.is_partial,
    }


def _when(mtime: float) -> str:
    return _dt.datetime.fromtimestamp(mtime).strftime("%Y-%m-%d %H:%M")


def _derived_json(item: DerivedFile) -> dict[str, object]:
    return {
        "kind": item.kind,
        "filename": item.name,
        "path": str(item.path),
        "size": item.size,
        "mtime": item.mtime,
        "sources": list(item.sources),
    }


_STATUS = {CHECKPOINT: "converted", MEMBER: "extracted"}


def _ls(args: argparse.Namespace) -> int:
    entries = cache_entries()
    derived = derived_files()
    if args.json:
        print_json([{"kind": "download", **_entry_json(e)} for e in entries]
                   + [_derived_json(d) for d in derived])  # fmt: skip
        return 0
    if not entries and not derived:
        print(f"cache is empty ({zoo_home()})")
        return 0
    rows = [
        (
            e.filename,
            human_size(e.size),
            "partial" if e.is_partial else "complete",
            _when(e.mtime),
            e.key.partition("/")[0][:19],
        )
        for e in entries
    ]
    rows += [(d.name, human_size(d.size), _STATUS[d.kind], _when(d.mtime), "-") for d in derived]
    # KEY (hash kind + prefix) tells apart files sharing a name, e.g. model.safetensors.
    print_table(("NAME", "SIZE", "STATUS", "MODIFIED", "KEY"), rows)
    total = sum(e.size for e in entries) + sum(d.size for d in derived)
    kinds = Counter(d.kind for d in derived)
    print(f"\n{len(entries)} download(s), {kinds[CHECKPOINT]} converted checkpoint(s), "
          f"{kinds[MEMBER]} extracted member(s): {human_size(total)} in {zoo_home()}")  # fmt: skip
    return 0


def _rm(args: argparse.Namespace) -> int:
    removed_downloads = remove_cached(args.pattern)
    forgotten = forget_matching(args.pattern) if args.forget else []
    targets = [d for d in derived_files() if matches(d, args.pattern)]
    if args.forget:  # and what was made from what is forgotten: it would outlive its source
        keys = [*forgotten, *(f"{p.parent.name}/{p.name}" for p in removed_downloads)]
        targets += [d for d in derived_from(keys) if d not in targets]
    removed = [*removed_downloads, *remove_derived(targets)]
    if args.json:
        print_json({"removed": [str(p) for p in removed], "forgotten": forgotten})
    else:
        for path in removed:
            print(f"removed {path}")
        for key in forgotten:
            print(f"forgot the hash recorded on first use for {key}")
        if not removed and not forgotten:
            print(f"nothing matches {args.pattern!r}")
    return 0 if removed or forgotten else 1


Checkpoint = tuple[Path, bool, str]  # (converted checkpoint, ok, reason)


def _verify(args: argparse.Namespace) -> int:
    results = verify_cache()
    checkpoints = verify_checkpoints()
    checks: list[UsableCheck] = []
    if not args.hashes_only:
        checkpoints, checks = _usable(results, checkpoints)
    downloads = [(r, *_merged(r, checks)) for r in results]
    if args.json:
        files = [
            {**_entry_json(r.entry), "ok": ok, "reason": why,
             "provisional": r.provisional and ok is None}
            for r, ok, why in downloads
        ]  # fmt: skip
        converted = [{"path": str(p), "ok": ok, "reason": why} for p, ok, why in checkpoints]
        print_json({"downloads": files, "checkpoints": converted})
    else:
        status = {True: "ok", False: "CORRUPT", None: "unchecked"}
        rows = [
            (r.entry.filename, human_size(r.entry.size),
             "provisional" if r.provisional and ok is None else status[ok], why)
            for r, ok, why in downloads
        ]  # fmt: skip
        rows += [
            (checkpoint_name(p), human_size(p.stat().st_size) if p.exists() else "-",
             status[ok], why)
            for p, ok, why in checkpoints
        ]  # fmt: skip
        if rows:
            print_table(("NAME", "SIZE", "STATUS", "DETAIL"), rows)
        else:
            print("cache is empty")
    bad = [d for d in downloads if d[1] is False] + [c for c in checkpoints if not c[1]]
    if bad and not args.json:
        print(f"\n{len(bad)} file(s) failed; DETAIL names the fix for each (`zoo cache rm NAME` "
              "removes one; the next use downloads or converts it again)")  # fmt: skip
    return 1 if bad else 0


def _usable(
    results: list[VerifyResult], checkpoints: list[Checkpoint]
) -> tuple[list[Checkpoint], list[UsableCheck]]:
    """Beyond hashes: load each intact checkpoint, convert each intact cached artifact."""
    from zoo.weights.usable import check_checkpoint, check_downloads

    checked, loaded = [], []
    for path, ok, why in checkpoints:
        problem = check_checkpoint(path) if ok else None
        if ok and problem is None:
            loaded.append(path)
        checked.append((path, ok and problem is None, problem or (f"{why}, loads" if ok else why)))
    intact = [r.entry.key for r in results if r.ok or r.provisional]
    return checked, check_downloads(intact, loaded)


def _merged(result: VerifyResult, checks: list[UsableCheck]) -> tuple[bool | None, str]:
    """A download's status: its hash, then whether what it is part of converts and loads."""
    mine = [c for c in checks if result.entry.key in c.keys]
    if not mine:
        return result.ok, result.reason
    hashed = "sha256 ok (recorded on first use)" if result.provisional else result.reason
    failed = [c for c in mine if not c.ok]
    return not failed, "; ".join([hashed, *(c.detail for c in failed or mine)])


def run_cache(args: argparse.Namespace) -> int:
    handlers = {"ls": _ls, "rm": _rm, "verify": _verify}
    return handlers[args.cache_command](args)
