"""The benchmarks' data: a district's year of history (``core.reference.history``, also what
``gridline demo load --size district-year`` loads), and a scratch PostgreSQL database per run.

    .venv/bin/python bench/dataset.py 2000     # a quick look: load 2,000 cases into SQLite
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, text  # noqa: E402

from core.reference.history import DISTRICT_YEAR_CASES, Dataset, load  # noqa: E402, F401 (used by the benches)

DEFAULT_BENCH_PG = "postgresql://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def scratch_database(tag: str, server: str | None = None) -> Iterator[str]:
    """A database of its own on a PostgreSQL server (``server``, else GRIDLINE_BENCH_PG, else
    the local test server) for one benchmark run; yields its URL and drops it afterwards."""
    from sqlalchemy.engine import make_url

    from core.platform.db import make_engine
    from core.platform.settings import normalise_database_url

    server = normalise_database_url(server or os.environ.get("GRIDLINE_BENCH_PG", DEFAULT_BENCH_PG))
    admin = make_engine(server, isolation_level="AUTOCOMMIT", pool_size=1)
    name = f"gridline_bench_{tag}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def describe(engine: Engine) -> dict[str, int]:
    """Row counts of the tables a benchmark reads (for the notes: state sizes)."""
    with engine.connect() as conn:
        return {t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar())
                for t in ("case", "caseevent", "survey", "household", "resident", "grid", "gazetteerentry")}


if __name__ == "__main__":
    import tempfile

    from core.platform.db import make_engine
    from core.platform.migrations import upgrade

    with tempfile.TemporaryDirectory() as tmp:
        eng = make_engine(f"sqlite:///{tmp}/d.sqlite3")
        upgrade(eng)
        print(load(eng, int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
        print(json.dumps(describe(eng)))
