"""Commands print every value whole, piped or not, and every time on the district's clock,
labelled. A real subprocess with its output piped: rich then has no terminal to measure."""

from __future__ import annotations

import re

import pytest
from sqlmodel import select

from core import actions
from core.actions.intake import Petition
from core.cases.models import Channel
from core.places.models import Grid
from core.platform.db import session_scope
from core.reference.demo import load_demo
from tests.gridline.test_cli import gridline
from tests.support.serve import database_url

LONG_GRID = "罗布社区第三网格幸福路东段与和平街交叉口以北片区"
LONG_TEXT = "罗布社区第三网格幸福路十二号楼道里的灯坏了好几天了晚上老人上下楼很危险请尽快派人来修"


@pytest.fixture
def filed(engine):
    with session_scope(engine) as session:
        load_demo(session)
        grid = session.exec(select(Grid).where(Grid.level == "micro").order_by(Grid.id)).first()
        grid.name = LONG_GRID
        session.add(grid)
        session.flush()
        case, _ = actions.submit_petition(session, Petition(
            channel=Channel.hotline, description=LONG_TEXT, contact_phone="+8613005732419"))
        actions.locate(session, case, actor="test", grid_id=grid.id, reason="operator")
        return case.number


def test_a_piped_case_list_cuts_no_value(engine, filed, tmp_path):
    # no COLUMNS (a test runner may set it): the command has nothing to size itself by
    env = {"GRIDLINE_DATABASE_URL": database_url(engine), "GRIDLINE_DATA_DIR": str(tmp_path),
           "GRIDLINE_TIMEZONE": "Asia/Shanghai", "COLUMNS": ""}
    done = gridline("cases", "list", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert filed in out
    assert LONG_TEXT in out, out
    assert "…" not in out
    assert "due (UTC+8)" in out


def test_case_show_labels_every_time_with_its_zone(engine, filed, tmp_path):
    env = {"GRIDLINE_DATABASE_URL": database_url(engine), "GRIDLINE_DATA_DIR": str(tmp_path),
           "GRIDLINE_TIMEZONE": "Asia/Shanghai"}
    done = gridline("cases", "show", filed, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "at (UTC+8)" in out
    stamps = re.findall(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}(?::\d{2})?(?: UTC[+-]\d+)?", out)
    assert stamps, out
    # a time is labelled where it stands, or stands in the history, whose heading names the zone
    history = out[out.index("at (UTC+8)"):]
    for stamp in stamps:
        assert "UTC+8" in stamp or stamp in history, stamp
