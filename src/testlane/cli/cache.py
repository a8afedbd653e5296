"""``testlane cache list|prune``: what the cache holds, and removing what is not needed.

The cache (setting ``cache_dir``) holds base clusters (``postgres``), MariaDB data directories
(``mariadb``), migrated snapshots (``snapshot``) and, as root, copies of binaries the service user
could not reach (``bin``), and the index of binary digests (``digests``, removed by ``prune --all``); see
:mod:`testlane.services.cache`. Both commands print to stdout, one
line per entry.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import click

from testlane.cli.common import CliState, pass_state
from testlane.core.runtime import RunContext
from testlane.services.cache import CacheEntry, list_entries, older_than, remove_entry, sweep_staging

__all__ = ["cache_group"]

MB = 1024 * 1024


def _layout(entry: CacheEntry) -> str:
    return f"stale ({entry.stale})" if entry.stale else "current"


def _one_line(text: str) -> str:
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.localtime(timestamp))


# The index of binary digests (testlane.services.cache.content_digest): not an entry, so `list_entries` does
# not see it; `prune --all` removes it too. Removing it while a run hashes is harmless: a missing record is
# hashed again, and a record that cannot be written is skipped.
DIGESTS = "digests"


def _remove_digest_index(cache_dir: Path) -> int | None:
    """Remove ``<cache_dir>/digests/``; the bytes freed, or None when it was not there (or not removable)."""
    index = cache_dir / DIGESTS
    if not index.is_dir() or index.is_symlink():
        return None
    size = sum(p.lstat().st_size for p in index.iterdir())
    shutil.rmtree(index, ignore_errors=True)
    return None if index.exists() else size


@click.group("cache")
def cache_group() -> None:
    """List and prune the cache of initialized clusters and migrated snapshots."""


@cache_group.command("list")
@pass_state
def list_command(state: CliState) -> None:
    """Every cache entry: kind, key, project, size in MB, last use, layout (current or stale)."""
    context = RunContext.from_settings(state.settings())
    entries = list_entries(context.cache_dir)
    rows = [("KIND", "KEY", "PROJECT", "SIZE_MB", "LAST_USED", "LAYOUT")]
    # A key is one cell of one line: escape what an entry's name may hold (earlier versions could name one
    # after a binary's multi-line output).
    rows += [
        (e.kind, _one_line(e.key), e.project or "-", f"{e.size / MB:.1f}", _when(e.last_used), _layout(e))
        for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[5])
    total = sum(e.size for e in entries)
    click.echo(f"{len(entries)} entries, {total / MB:.1f} MB in {context.cache_dir}")


@cache_group.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    metavar="DAYS",
    help="Remove entries not used for more than DAYS days.",
)
@click.option(
    "--stale",
    is_flag=True,
    help="Remove entries that are never used again: an earlier layout, another owner, or incomplete.",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Remove every entry and the index of binary digests (the next start rebuilds what it needs).",
)
@pass_state
def prune_command(state: CliState, days: float | None, stale: bool, everything: bool) -> None:
    """Remove cache entries: by age, stale ones, or all. An entry in use (being built or copied by a
    run) is never removed: it is named and left alone. Prints what it removed and the space freed."""
    if days is None and not stale and not everything:
        raise click.UsageError("say what to prune: --older-than DAYS, --stale or --all.")
    context = RunContext.from_settings(state.settings())
    for path in sweep_staging(context.cache_dir):
        click.echo(f"removed {path} (left by a killed build)")
    now = time.time()
    freed = 0
    removed = 0
    for entry in list_entries(context.cache_dir, sizes=False):
        wanted = everything or (stale and bool(entry.stale)) or (days is not None and older_than(entry, days, now))
        if not wanted:
            continue
        size = remove_entry(entry.path)
        if size is None:
            click.echo(f"in use, left alone: {entry.kind} {entry.key}")
            continue
        removed += 1
        freed += size
        click.echo(f"removed {entry.kind} {entry.key} ({size / MB:.1f} MB)")
    index = _remove_digest_index(context.cache_dir) if everything else None
    if index is not None:
        freed += index
        click.echo(f"removed {context.cache_dir / DIGESTS} (remembered binary digests, {index / MB:.1f} MB)")
    if removed:
        noun = "entry" if removed == 1 else "entries"
        click.echo(f"removed {removed} {noun}, freed {freed / MB:.1f} MB ({freed} bytes)")
    elif index is None:
        click.echo("nothing to prune")
