"""A log replayed in parts, by linked component, tallies exactly what one replay does,
and a log damaged by a crash replays with its unreadable lines skipped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.replay_command import add_replay_parser, run_replay
from gateway.replay_parts import Links, _lines, deal
from gateway.simulation.command import add_simulate_parser, run_simulate
from tests.simulation.test_run import parse


def test_a_split_replay_tallies_what_one_replay_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Chains link accounts through cards and devices in turn: each chain must stay whole."""
    log = tmp_path / "log.jsonl"
    argv = ["simulate", "--scenario", "chains", "--scale", "0.002", "--legit-orgs", "30"]
    argv += ["--days", "2", "--seed", "4", "--json", "--log", str(log), "--workers", "2"]
    assert run_simulate(parse(add_simulate_parser, argv)) == 0
    capsys.readouterr()
    # The same log damaged as a crash or a disk leaves it: a line that is not an object
    # and one that is not UTF-8 in the middle, the last line torn mid-write, and two
    # objects whose fields are not what the gateway writes (signals that are not pairs, no
    # reservation). Those five are skipped; nothing else changes.
    lines = log.read_bytes().splitlines(keepends=True)
    damaged = tmp_path / "damaged.jsonl"
    bad = [b"[1, 2]\n", b'{"account": "\xff\xfe"}\n']
    model = json.loads(lines[0])
    for n, broken in enumerate(({"signals": [["card"]]}, {"reserved": None})):
        bad.append(json.dumps({**model, "request_id": f"bad-{n}", **broken}).encode() + b"\n")
    damaged.write_bytes(b"".join([*lines[:500], *bad, *lines[500:], lines[0][:150]]))
    found = []
    for path in (log, damaged):
        for workers in ("1", "2"):
            argv = ["replay", str(path), "--policies", "policies/distillation-defense.yaml"]
            argv += ["--json", "--by", "attribute:verified", "--workers", workers]
            assert run_replay(parse(add_replay_parser, argv)) == 0
            found.append(json.loads(capsys.readouterr().out))
    assert found[0] == found[1]
    assert found[0]["exchanges"] > 1000 and found[0]["policies"]
    assert found[2] == found[3] == {**found[0], "skipped": found[0]["skipped"] + 5}


def test_stretches_of_a_log_hold_every_line_once(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    lines = [json.dumps({"n": i, "pad": "x" * (i % 7)}) + "\n" for i in range(40)]
    log.write_text("".join(lines) + "\n")
    size = log.stat().st_size
    for cut in range(size + 1):
        read = [line.decode() for line, _ in _lines(str(log), 0, cut)]
        read += [line.decode() for line, _ in _lines(str(log), cut, None)]
        assert read == lines


def test_components_go_whole_to_the_lightest_part() -> None:
    links = Links()
    links.lines.update({"a": 5, "b": 4, "c": 3, "d": 1})
    links.join("aa", "ob")  # a and b share an organization
    links.join("ab", "ob")
    part_of = deal(links, 2)
    assert part_of["a"] == part_of["b"] != part_of["c"] == part_of["d"]
