"""Independent tasks in worker processes: how a long replay or simulation uses every core.

``run_tasks`` hands each task to ``function`` in one of ``workers`` processes (started
fresh, ``spawn``, so they inherit no loop, lock or open store), in the order given, each
worker taking the next task when it finishes one: give the largest first. A task sends
progress with the ``report`` callable it is given; the parent passes it on to
``on_report`` with the task's index. With one worker (or one task) everything runs in
this process, in order, the same way. A task that raises, or a worker that dies, stops
the run with ``WorkerError`` carrying what happened. A worker whose parent is gone (the
command killed, even with SIGKILL) stops within about a second instead of running on.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from gateway.errors import WorkerError

T = TypeVar("T")
R = TypeVar("R")
Report = Callable[[Any], None]
OnReport = Callable[[int, Any], None]


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_tasks(
    function: Callable[[T, Report], R],
    tasks: Sequence[T],
    workers: int,
    on_report: OnReport | None = None,
) -> list[R]:
    """Each task's result, in the order of ``tasks``. ``function`` must be a module-level
    function, and tasks and results picklable, when ``workers`` is above 1."""
    shown = on_report or _ignore
    if workers <= 1 or len(tasks) <= 1:
        return [function(task, _reporter(shown, index)) for index, task in enumerate(tasks)]
    context = multiprocessing.get_context("spawn")
    todo: multiprocessing.Queue[tuple[int, T] | None] = context.Queue()
    done: multiprocessing.Queue[tuple[str, int, Any]] = context.Queue()
    for item in enumerate(tasks):
        todo.put(item)
    count = min(workers, len(tasks))
    for _ in range(count):
        todo.put(None)
    processes = [
        context.Process(target=_work, args=(function, todo, done), daemon=True)
        for _ in range(count)
    ]
    for process in processes:
        process.start()
    results: dict[int, R] = {}
    try:
        while len(results) < len(tasks):
            try:
                kind, index, payload = done.get(timeout=0.5)
            except queue.Empty:
                _check(processes)
                continue
            if kind == "report":
                shown(index, payload)
            elif kind == "done":
                results[index] = payload
            else:
                raise WorkerError(f"Task {index + 1} of {len(tasks)} failed:\n{payload}")
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join()
    return [results[index] for index in range(len(tasks))]


def _work(
    function: Callable[[T, Report], R],
    todo: multiprocessing.Queue[tuple[int, T] | None],
    done: multiprocessing.Queue[tuple[str, int, Any]],
) -> None:
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    while (item := todo.get()) is not None:
        index, task = item
        try:
            result = function(task, _sender(done, index))
        except BaseException:  # any failure is the parent's to report
            done.put(("error", index, traceback.format_exc()))
            return
        done.put(("done", index, result))


PARENT_CHECK_S = 1.0


def _exit_with_parent(parent: int) -> None:
    """Daemonic processes are ended by the parent's exit handlers, which a SIGTERM or
    SIGKILL skips: an orphaned worker would replay on for the rest of its part."""
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


def _sender(done: multiprocessing.Queue[tuple[str, int, Any]], index: int) -> Report:
    return lambda message: done.put(("report", index, message))


def _check(processes: Sequence[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        if process.exitcode not in (None, 0):
            raise WorkerError(
                f"A worker process stopped with exit code {process.exitcode} "
                "(killed for lack of memory?)."
            )


def _reporter(on_report: OnReport, index: int) -> Report:
    return lambda message: on_report(index, message)


def _ignore(index: int, message: Any) -> None:
    return None
