"""Migrations from an empty database, on both databases, match the models exactly."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import gridline.tables  # noqa: F401
from core.platform.db import make_engine
from core.platform.migrations import current_revision, downgrade, upgrade


@pytest.fixture(params=["sqlite", "postgres"])
def empty_engine(request, tmp_path):
    if request.param == "sqlite":
        eng = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite3'}")
        yield eng
        eng.dispose()
        return
    shared = request.getfixturevalue("pg_engine")  # the suite's migrated engine on this database
    eng = make_engine(request.getfixturevalue("pg_server_url"))
    with eng.begin() as conn:  # this test owns the schema: start from nothing
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    yield eng
    with eng.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    eng.dispose()
    upgrade(shared)  # leave the database migrated for the tests that follow


def test_upgrade_from_empty_matches_models_and_downgrades(empty_engine):
    upgrade(empty_engine)
    assert current_revision(empty_engine) is not None
    with empty_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"
    downgrade(empty_engine, "base")
    assert set(inspect(empty_engine).get_table_names()) <= {"alembic_version"}
    upgrade(empty_engine)  # and up again: nothing left behind by the downgrade
    assert inspect(empty_engine).has_table("case")


def test_0002_turns_case_files_into_attachments_and_back(empty_engine):
    """Cases filed before 0002 keep their recording and photos, as Attachment rows."""
    upgrade(empty_engine, "0001")
    with empty_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO \"case\" (number, channel, status, description, audio_path, photos, urgency, "
            "reopen_count, escalation_count, created_at, updated_at) VALUES "
            "('2611010001', 'hotline', 'received', '', '/nowhere/rec.wav', NULL, 'normal', 0, 0, "
            "'2026-11-01 01:00:00', '2026-11-01 01:00:00'), "
            "('2611010002', 'chat', 'received', '灯坏了', NULL, '[\"chat/2026/11/photo-a.jpg\"]', 'normal', 0, 0, "
            "'2026-11-01 02:00:00', '2026-11-01 02:00:00')"))
        # the chat already had an Attachment row for its photo: it must not be doubled
        conn.execute(text(
            "INSERT INTO attachment (case_id, kind, path, created_at) SELECT id, 'photo', "
            "'chat/2026/11/photo-a.jpg', created_at FROM \"case\" WHERE number = '2611010002'"))
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT c.number, a.kind, a.path FROM attachment a JOIN \"case\" c ON c.id = a.case_id "
            "ORDER BY c.number, a.id")).all()
    assert [tuple(r) for r in rows] == [
        ("2611010001", "recording", "/nowhere/rec.wav"),
        ("2611010002", "photo", "chat/2026/11/photo-a.jpg"),
    ]
    downgrade(empty_engine, "0001")
    with empty_engine.connect() as conn:
        back = conn.execute(text("SELECT number, audio_path FROM \"case\" ORDER BY number")).all()
    assert [tuple(r) for r in back] == [("2611010001", "/nowhere/rec.wav"), ("2611010002", None)]


def test_0010_counts_the_answered_surveys_already_on_file(empty_engine):
    """Cases answered before 0010 carry their answers' counts afterwards, as record_survey
    would have kept them: the satisfaction rates of past periods do not change."""
    upgrade(empty_engine, "0009")
    with empty_engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO \"case\" (id, number, channel, status, description, urgency, reopen_count, escalation_count, "
            "created_at, updated_at) VALUES "
            "(1, '2611010001', 'hotline', 'closed', '', 'normal', 1, 0, '2026-11-01 01:00:00', '2026-11-01 01:00:00'), "
            "(2, '2611010002', 'chat', 'verified', '', 'normal', 0, 0, '2026-11-01 02:00:00', '2026-11-01 02:00:00')"))
        conn.execute(text(
            "INSERT INTO survey (case_id, channel, status, attempts, satisfied, created_at) VALUES "
            "(1, 'phone', 'answered', 1, 'not', '2026-11-02 01:00:00'), "
            "(1, 'phone', 'answered', 1, 'basically', '2026-11-05 01:00:00'), "
            "(1, 'phone', 'unreachable', 3, NULL, '2026-11-03 01:00:00'), "
            "(2, 'chat', 'pending', 0, NULL, '2026-11-02 02:00:00')"))
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        rows = conn.execute(text(
            'SELECT number, surveys_answered, surveys_satisfied FROM "case" ORDER BY number')).all()
    assert [tuple(r) for r in rows] == [("2611010001", 2, 1), ("2611010002", 0, 0)]
    downgrade(empty_engine, "0009")
    columns = {c["name"] for c in inspect(empty_engine).get_columns("case")}
    assert "surveys_answered" not in columns and "surveys_satisfied" not in columns


def test_0011_gives_attachments_the_type_of_their_bytes(empty_engine, tmp_path, monkeypatch):
    """Rows off the allow-list (a sender's text/html, a missing type) take the type their
    file's bytes have, read from the settings' data directory; a file that is not there,
    or is no allowed media, becomes application/octet-stream; allow-listed rows stay."""
    from core.platform.settings import get_settings
    from tests.support.media_samples import audio

    data = tmp_path / "data"
    (data / "chat").mkdir(parents=True)
    (data / "chat/voice-real.oga").write_bytes(audio("ogg"))
    (data / "chat/voice-codecs.oga").write_bytes(audio("ogg"))
    (data / "chat/voice-page.oga").write_bytes(b"<!doctype html><script src='/console/cases/1/files/3'></script>")
    monkeypatch.setenv("GRIDLINE_DATA_DIR", str(data))
    get_settings.cache_clear()
    try:
        upgrade(empty_engine, "0010")
        rows = [  # path, the type on the row before 0011, the type after
            ("chat/voice-real.oga", None, "audio/ogg"),
            ("chat/voice-codecs.oga", "audio/ogg; codecs=opus", "audio/ogg"),
            ("chat/voice-page.oga", "text/html", "application/octet-stream"),
            ("chat/voice-gone.oga", "text/javascript", "application/octet-stream"),
            ("chat/photo-gone.jpg", "image/jpeg", "image/jpeg"),
            ("recordings/rec.wav", "audio/wav", "audio/wav"),
        ]
        with empty_engine.begin() as conn:
            for path, before, _ in rows:
                conn.execute(text("INSERT INTO attachment (kind, path, mime_type, created_at) VALUES "
                                  "('voice', :path, :mime, '2026-11-01 01:00:00')"), {"path": path, "mime": before})
        upgrade(empty_engine)
        with empty_engine.connect() as conn:
            after = dict(conn.execute(text("SELECT path, mime_type FROM attachment")).all())
        assert after == {path: expected for path, _, expected in rows}
        downgrade(empty_engine, "0010")  # a no-op: the declared types are not brought back
        with empty_engine.connect() as conn:
            assert dict(conn.execute(text("SELECT path, mime_type FROM attachment")).all()) == after
    finally:
        get_settings.cache_clear()


def test_0014_moves_the_telegram_inbox_with_each_update_s_chat_and_back(empty_engine):
    """Updates accepted but not handled before 0014 are in the new inbox afterwards, each
    with its chat (a message's chat; a button press's message's chat, else its user), and
    go back to ``channelstate`` on the way down."""
    import json

    upgrade(empty_engine, "0011")
    updates = {
        "11": {"update_id": 11, "message": {"message_id": 1, "date": 0, "chat": {"id": 501, "type": "private"},
                                             "text": "路灯坏了"}},
        "12": {"update_id": 12, "callback_query": {"id": "q", "from": {"id": 502, "is_bot": False, "first_name": "A"},
                                                   "chat_instance": "c", "data": "x",
                                                   "message": {"message_id": 2, "date": 0,
                                                               "chat": {"id": 503, "type": "private"}}}},
        "13": {"update_id": 13, "callback_query": {"id": "r", "from": {"id": 504, "is_bot": False, "first_name": "B"},
                                                   "chat_instance": "c", "data": "x"}},
    }
    with empty_engine.begin() as conn:
        for key, data in updates.items():
            conn.execute(text("INSERT INTO channelstate (namespace, key, data, updated_at) VALUES "
                              "('tg_inbox', :key, :data, '2026-12-01 01:00:00')"), {"key": key, "data": json.dumps(data)})
        conn.execute(text("INSERT INTO channelstate (namespace, key, data, updated_at) VALUES "
                          "('tg:chat', '501', '{\"draft\": {}}', '2026-12-01 01:00:00')"))
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        moved = [tuple(r) for r in conn.execute(text("SELECT update_id, chat_id FROM chat_inbox ORDER BY update_id"))]
        left = [tuple(r) for r in conn.execute(text("SELECT namespace, key FROM channelstate"))]
    assert moved == [(11, 501), (12, 503), (13, 504)]
    assert left == [("tg:chat", "501")]
    downgrade(empty_engine, "0011")
    with empty_engine.connect() as conn:
        back = {r[0]: (json.loads(r[1]) if isinstance(r[1], str) else r[1]) for r in conn.execute(
            text("SELECT key, data FROM channelstate WHERE namespace = 'tg_inbox'"))}
    assert back == updates


def test_0017_turns_routing_reasons_routing_wrote_into_traces_and_keeps_the_rest(empty_engine):
    """Reasons routing wrote in English before traces become codes every edge can say;
    gazetteer sentences, typed reasons and console codes stay as they were (shown as text);
    going back says each trace in English again."""
    import json

    from core.platform.i18n import case_routing_text

    upgrade(empty_engine, "0016")
    reasons = ["point in polygon 3501020010010102",
               "point on boundary of 3501020010010101 (also 3501020010010102); lowest code",
               "registered household H0012",
               "registered household H0013 (number also in 2 other grids)",
               "gazetteer exact 洋坊新村; 片区确定，楼栋未知 [ancestor_only level=area needs_building=yes]",
               "console.located",
               None]
    with empty_engine.begin() as conn:
        for i, reason in enumerate(reasons, start=1):
            conn.execute(text(
                "INSERT INTO \"case\" (id, number, channel, status, description, urgency, reopen_count, "
                "escalation_count, created_at, updated_at, routing_reason) VALUES "
                f"({i}, '26110100{i:02d}', 'hotline', 'new', '', 'normal', 0, 0, '2026-11-01 01:00:00', "
                "'2026-11-01 01:00:00', :reason)"), {"reason": reason})
    upgrade(empty_engine)
    with empty_engine.connect() as conn:
        rows = conn.execute(text('SELECT routing_trace, routing_reason FROM "case" ORDER BY id')).all()
    traces = [json.loads(t) if isinstance(t, str) else t for t, _ in rows]
    assert traces[:4] == [
        [{"code": "point", "params": {"grid": "3501020010010102"}}],
        [{"code": "point_boundary", "params": {"grid": "3501020010010101", "others": "3501020010010102"}}],
        [{"code": "household", "params": {"household": "H0012"}}],
        [{"code": "household_shared", "params": {"household": "H0013", "others": 2}}],
    ]
    assert [r for _, r in rows[:4]] == [None] * 4
    assert traces[4:] == [None, None, None]
    assert [r for _, r in rows[4:]] == reasons[4:]
    # Each edge says them in its reader's language; older words as they were.
    assert case_routing_text("zh", traces[2], None) == "登记住户 H0012"
    assert case_routing_text("en", traces[0], None) == "point in polygon 3501020010010102"
    assert case_routing_text("zh", None, reasons[5]) == "话务员人工定位"
    assert case_routing_text("zh", None, reasons[4]) == reasons[4]
    downgrade(empty_engine, "0016")
    with empty_engine.connect() as conn:
        back = [r for (r,) in conn.execute(text('SELECT routing_reason FROM "case" ORDER BY id')).all()]
    assert back == reasons
    assert "routing_trace" not in {c["name"] for c in inspect(empty_engine).get_columns("case")}


def test_0023_counts_the_calls_already_taken_as_answered_when_they_arrived(empty_engine):
    """Calls taken before 0023 had their greeting in the answer to the webhook that wrote their
    row: the service figures count them answered at arrival (survey calls are not offered calls)."""
    upgrade(empty_engine, "0021")
    with empty_engine.begin() as conn:
        for sid, direction in (("CA-in", "inbound"), ("CA-out", "outbound")):
            conn.execute(text(
                "INSERT INTO callsession (call_sid, direction, status, speech_seconds, started_at, updated_at) "
                "VALUES (:sid, :direction, 'completed', 0, '2026-11-01 01:00:00', '2026-11-01 01:05:00')"),
                {"sid": sid, "direction": direction})
    upgrade(empty_engine, "0023")
    with empty_engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT call_sid, answered_at FROM callsession")).all())
    assert str(rows["CA-in"]).startswith("2026-11-01 01:00:00") and rows["CA-out"] is None
    downgrade(empty_engine, "0021")
    assert "answered_at" not in {c["name"] for c in inspect(empty_engine).get_columns("callsession")}
