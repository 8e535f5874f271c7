"""Worker processes for replay and simulate: results in order, failures reported, and no
worker left running when the command is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import WorkerError
from gateway.workers import run_tasks


def squared(task: int, report: Any) -> int:
    report(task)
    return task * task


def failing(task: int, report: Any) -> int:
    if task == 2:
        raise ValueError("task two is broken")
    return task


def test_results_come_back_in_task_order_with_every_report() -> None:
    seen: list[tuple[int, Any]] = []
    results = run_tasks(squared, [5, 1, 4, 2], 2, lambda index, m: seen.append((index, m)))
    assert results == [25, 1, 16, 4]
    assert sorted(seen) == [(0, 5), (1, 1), (2, 4), (3, 2)]


def test_a_failing_task_stops_the_run_with_its_traceback() -> None:
    with pytest.raises(WorkerError, match="task two is broken"):
        run_tasks(failing, [1, 2, 3], 2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but still listed until its (new) parent reaps it.
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def test_workers_stop_when_the_command_is_killed(tmp_path: Path) -> None:
    """SIGKILL skips the parent's cleanup: the workers must notice on their own."""
    (tmp_path / "endless.py").write_text(
        textwrap.dedent(
            """
            import os, time
            from pathlib import Path

            def forever(task, report):
                Path(task).joinpath(str(os.getpid())).write_text("")
                while True:
                    time.sleep(0.05)
            """
        )
    )
    pids = tmp_path / "pids"
    pids.mkdir()
    script = (
        "import sys\nfrom gateway.workers import run_tasks\nfrom endless import forever\n"
        f"if __name__ == '__main__':\n    run_tasks(forever, [{str(pids)!r}] * 2, 2)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.getcwd()])}
    command = subprocess.Popen([sys.executable, "-c", script], env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers += [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2, "the workers never started"
        command.send_signal(signal.SIGKILL)
        command.wait()
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "orphaned workers still running"
    finally:
        command.kill()
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
