"""Which file changes can change a policy set, and a watcher that reports them in bursts.

A watch on a file follows its inode, so it misses an atomic replace (a new file renamed over
the old) and a Kubernetes ConfigMap update (a new ``..data`` symlink renamed over the old).
Folders are watched instead, and their events filtered by name.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator
from pathlib import Path

from watchfiles import Change, awatch

from gateway.policy.loader import SUFFIXES

DEBOUNCE_MS = 250  # a save or a ConfigMap update is a burst of events: load once per burst
CONFIGMAP_LINK = "..data"  # Kubernetes updates a mount by swapping this one symlink

Targets = frozenset[tuple[str, str]]  # (real folder, file name or "*" for any policy file)


def watch_targets(path: Path, registry: str | None) -> Targets:
    """A folder is watched for its policy files; a single file through its folder, and so is
    the API-key registry, which may live elsewhere."""
    pairs = {(path, "*")} if path.is_dir() else {(path.parent, path.name)}
    if registry is not None:
        pairs.add((Path(registry).parent, Path(registry).name))
    # realpath on the folder only: the file names themselves may be ConfigMap symlinks.
    return frozenset((os.path.realpath(folder), name) for folder, name in pairs)


def wanted(targets: Targets, path: str) -> bool:
    """Whether a change at ``path`` may change the set; hidden names (temp files) do not."""
    folder, name = os.path.split(path)
    folder = os.path.realpath(folder)
    if name == CONFIGMAP_LINK:
        return any(watched == folder for watched, _ in targets)
    if (folder, name) in targets:
        return True
    return (folder, "*") in targets and name.endswith(SUFFIXES) and not name.startswith(".")


def changes(targets: Targets, stop: asyncio.Event) -> AsyncGenerator[set[tuple[Change, str]], None]:
    """Each burst of wanted changes, until ``stop`` is set."""

    def keep(_change: Change, path: str) -> bool:
        return wanted(targets, path)

    return awatch(
        *sorted({folder for folder, _ in targets}),
        watch_filter=keep,
        debounce=DEBOUNCE_MS,
        recursive=False,  # a folder's sub-folders are not part of its set
        stop_event=stop,
        rust_timeout=1_000,  # cancelling waits for the watch thread: bound that wait
    )
