"""Hot reload: re-load the policy set when its files change, keep the last good set on failure.

Three triggers lead to one step (load the whole set, check it, swap it in if its version is
new): a change in the watched folder, a periodic re-load in case an event was missed, and
SIGHUP. docs/reload.md tells the operator's side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gateway.errors import PolicyError
from gateway.policy.loader import load_policy_set
from gateway.policy.model import PolicySet
from gateway.policy.watch import Targets, changes, watch_targets

logger = logging.getLogger("gateway.reload")

WATCH_RETRY_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """One reload attempt; ``version``, ``sources`` and ``loaded_at`` describe the set running
    after it, ``checked_at`` when the attempt ran."""

    ok: bool
    changed: bool
    version: str
    problems: list[str]
    loaded_at: float
    sources: tuple[str, ...]
    checked_at: float

    @property
    def outcome(self) -> str:
        """``ok`` (a new set runs), ``unchanged`` or ``failed``: what ``on_result`` receives."""
        if not self.ok:
            return "failed"
        return "ok" if self.changed else "unchanged"


class PolicyReloader:
    """Keeps the running policy set in step with the files at ``path`` (a file or a folder).

    ``current`` returns the running set and ``swap`` installs a new one; ``last_good`` says
    which set runs, since when and from which files (the initial set counts from construction).
    """

    def __init__(
        self,
        path: str | Path,
        current: Callable[[], PolicySet],
        swap: Callable[[PolicySet], object],  # PolicyHolder.swap returns the old set
        *,
        on_result: Callable[[str], None] | None = None,
        poll_interval: float = 5.0,
        watch: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be positive, not {poll_interval!r}")
        self.path = Path(path)
        self.poll_interval = poll_interval
        self._current = current
        self._swap = swap
        self._on_result = on_result
        self._watch = watch
        self._clock = clock
        running, now = current(), clock()
        self.last_good = ReloadResult(True, False, running.version, [], now, running.sources, now)
        self.last_result = self.last_good
        # Loads run in worker threads and may finish out of order; only the newest may apply.
        self._begun = 0
        self._applied = 0
        self._kick = asyncio.Event()
        self._stopping = asyncio.Event()
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def reload(self) -> ReloadResult:
        """Load and check the set now; swap it in if its version is new. Never raises for a
        bad file: a set that fails the check changes nothing, and each problem is logged."""
        self._begun += 1
        return self._apply(self._begun, self._load(), quiet=False)

    async def areload(self) -> ReloadResult:
        """``reload`` with the files read in a worker thread, so requests keep flowing."""
        return await self._reload(quiet=False)

    async def run(self) -> None:
        """Watch and poll until ``stop()``; SIGHUP (see ``install_sighup``) reloads at once."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._poll())
            if self._watch:
                tasks.create_task(self._watch_files())

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        """Reload on SIGHUP. Without a handler SIGHUP kills a single-process uvicorn, which
        handles only SIGINT and SIGTERM. ``stop()`` removes it."""
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._signal_loop = loop

    async def stop(self) -> None:
        """Remove the SIGHUP handler, end watching and polling, and wait for them to end."""
        if self._signal_loop is not None:
            self._signal_loop.remove_signal_handler(signal.SIGHUP)
            self._signal_loop = None
        self._stopping.set()
        self._kick.set()
        if self._task is not None:
            task, self._task = self._task, None
            await task

    async def __aenter__(self) -> PolicyReloader:
        self._task = asyncio.create_task(self.run(), name="policy-reloader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _on_sighup(self) -> None:
        logger.info("SIGHUP: reloading the policy set from %s", self.path)
        self._kick.set()

    async def _reload(self, *, quiet: bool) -> ReloadResult:
        self._begun += 1
        ticket = self._begun
        loaded = await asyncio.to_thread(self._load)
        return self._apply(ticket, loaded, quiet=quiet)

    def _load(self) -> PolicySet | list[str]:
        try:
            return load_policy_set(self.path)
        except PolicyError as exc:
            return exc.problems
        except OSError as exc:  # listing the folder failed; unreadable files are problems already
            return [f"{self.path}: cannot read: {exc.strerror or exc}"]

    def _apply(self, ticket: int, loaded: PolicySet | list[str], *, quiet: bool) -> ReloadResult:
        if ticket < self._applied:
            return self.last_result  # a load that began later has already been applied
        self._applied = ticket
        running, now, good = self._current(), self._clock(), self.last_good
        if isinstance(loaded, list):
            result = ReloadResult(
                False, False, running.version, loaded, good.loaded_at, running.sources, now
            )
        elif loaded.version == running.version:
            result = ReloadResult(
                True, False, running.version, [], good.loaded_at, running.sources, now
            )
        else:
            self._swap(loaded)
            result = ReloadResult(True, True, loaded.version, [], now, loaded.sources, now)
            self.last_good = result
        previous, self.last_result = self.last_result, result
        # The poll runs every few seconds: it reports only news, not "unchanged" or the same
        # failure again. Events, SIGHUP and reload() always report. Files put back as the
        # running set after a failure are news: the set is no longer stale.
        repeat = not result.ok and result.problems == previous.problems
        if quiet and ((result.outcome == "unchanged" and previous.ok) or repeat):
            return result
        if not result.ok:
            for line in result.problems:
                logger.warning("policy reload failed, keeping %s: %s", running.version, line)
        elif result.changed:
            logger.info(
                "policy set %s loaded from %s (was %s)",
                result.version,
                ", ".join(result.sources),
                running.version,
            )
        if self._on_result is not None:
            self._on_result(result.outcome)
        return result

    async def _safe_reload(self, *, quiet: bool) -> None:
        try:
            await self._reload(quiet=quiet)
        except Exception:  # a faulty swap or on_result must not end reloading
            logger.exception("policy reload raised")

    async def _poll(self) -> None:
        while True:
            kicked = await _wait(self._kick, self.poll_interval)
            if self._stopping.is_set():
                return
            self._kick.clear()
            await self._safe_reload(quiet=not kicked)

    async def _watch_files(self) -> None:
        while not self._stopping.is_set():
            targets = self._targets()
            try:
                await self._watch_until_moved(targets)
            except Exception:
                logger.warning(
                    "policy watcher failed; polling every %gs, retrying the watcher in %gs",
                    self.poll_interval,
                    WATCH_RETRY_SECONDS,
                    exc_info=True,
                )
                await _wait(self._stopping, WATCH_RETRY_SECONDS)

    async def _watch_until_moved(self, targets: Targets) -> None:
        """Reload on every burst of changes; return on stop or when the key registry moved."""
        async with contextlib.aclosing(changes(targets, self._stopping)) as bursts:
            async for _ in bursts:
                await self._safe_reload(quiet=False)
                if self._targets() != targets:
                    return

    def _targets(self) -> Targets:
        return watch_targets(self.path, self._current().identity.api_keys_file)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Whether ``event`` was set within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True
