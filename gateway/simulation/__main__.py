"""``python -m gateway.simulation replay|simulate …``: both commands, outside ``gateway.cli``."""

from __future__ import annotations

import argparse
import sys

from gateway.errors import ConfigError, PolicyError
from gateway.replay import add_replay_parser, run_replay
from gateway.simulation.command import add_simulate_parser, run_simulate


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.simulation")
    commands = parser.add_subparsers(dest="command", required=True)
    add_replay_parser(commands)
    add_simulate_parser(commands)
    args = parser.parse_args()
    try:
        return run_replay(args) if args.command == "replay" else run_simulate(args)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except PolicyError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
