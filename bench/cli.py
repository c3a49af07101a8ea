"""Start-up of the ``gridline`` command: wall time of `gridline --help`, `gridline cases --help`
and `gridline cases list` (against an empty SQLite database at the newest schema), each a fresh
process, for this checkout and, beside it in the same run, for a baseline checkout
(``--baseline DIR``, e.g. another git worktree at the commit to compare with). Runs alternate
between the two, so both see the same load on the machine; the median of each is printed.

    .venv/bin/python bench/cli.py --baseline /path/to/other/checkout --rounds 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
RUNS = {
    "gridline --help": ["--help"],
    "gridline cases --help": ["cases", "--help"],
    "gridline cases list": ["cases", "list"],
}


def gridline(checkout: Path, args: list[str], env: dict[str, str]) -> float:
    """Seconds for one `python -m gridline.cli ARGS` run in ``checkout`` (its own modules first)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gridline.cli", *args], cwd=checkout, env=env,
                          capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: gridline {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="another checkout of Gridline")
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDLINE_")}
        env.update(GRIDLINE_DATA_DIR=folder, GRIDLINE_DATABASE_URL=f"sqlite:///{folder}/bench.sqlite3",
                   COLUMNS="100", PYTHONPATH="")
        gridline(HERE, ["db", "upgrade"], env)
        times: dict[tuple[str, str], list[float]] = {}
        checkouts = {"this": HERE, "baseline": opts.baseline.resolve()}
        for _ in range(opts.rounds):
            for label, args in RUNS.items():
                for which, checkout in checkouts.items():
                    times.setdefault((label, which), []).append(gridline(checkout, args, env))
    print(f"start-up, median of {opts.rounds} fresh processes (s); baseline {checkouts['baseline']}")
    print(f"{'command':<24}{'this':>8}{'baseline':>10}")
    for label in RUNS:
        this, base = (statistics.median(times[(label, w)]) for w in ("this", "baseline"))
        print(f"{label:<24}{this:>8.2f}{base:>10.2f}")


if __name__ == "__main__":
    main()
