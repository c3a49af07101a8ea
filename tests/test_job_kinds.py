"""No job is ever queued that no handler takes: every ``jobs.enqueue`` in the code base names
a declared kind (``core.platform.jobs.declare``; ``enqueue`` refuses any other), and the server with
every channel configured takes every declared kind."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from core.platform import jobs
from core.platform.settings import Settings
from tests.support.fake_transcriber import FakeTranscriber

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "ivr", "chat", "console", "gridline", "speech_models")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out.append((name.removesuffix(".__init__"), path))
    return out


def _kinds_of(module, node: ast.expr, tree: ast.Module, inside: ast.FunctionDef | None) -> list[str]:
    """The kinds an enqueue's kind argument can be: a literal, a name or attribute bound to
    a declared kind, an item of a dict of them (``CHANNEL_JOBS[channel]``), or a parameter
    of a helper, followed to the helper's callers in the module."""
    if isinstance(node, ast.Constant):
        return [node.value]
    if isinstance(node, ast.Name) and inside is not None and node.id in [a.arg for a in inside.args.args]:
        position = [a.arg for a in inside.args.args].index(node.id)
        kinds = []
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == inside.name:
                given = call.args[position] if len(call.args) > position else next(
                    k.value for k in call.keywords if k.arg == node.id)
                kinds += _kinds_of(module, given, tree, _enclosing(tree, call))
        assert kinds, f"{module.__name__}.{inside.name} is never called"
        return kinds
    if isinstance(node, ast.Name):
        return [getattr(module, node.id)]
    if isinstance(node, ast.Attribute):
        return [getattr(_resolve(module, node.value), node.attr)]
    if isinstance(node, ast.Subscript):
        return list(_resolve(module, node.value).values())
    raise AssertionError(f"{module.__name__}: cannot tell which job kind {ast.unparse(node)} is")


def _enclosing(tree: ast.Module, target: ast.AST) -> ast.FunctionDef | None:
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and any(n is target for n in ast.walk(fn)):
            inner = [f for f in ast.walk(fn) if f is not fn and isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
                     and any(n is target for n in ast.walk(f))]
            return inner[-1] if inner else fn
    return None


def _resolve(module, node: ast.expr):
    if isinstance(node, ast.Name):
        return getattr(module, node.id)
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(module, node.value), node.attr)
    raise AssertionError(f"{module.__name__}: cannot resolve {ast.unparse(node)}")


def enqueued_kinds() -> dict[str, list[str]]:
    """Every kind any ``jobs.enqueue(session, KIND, …)`` (or ``enqueue_once``) of the code base
    queues → where."""
    found: dict[str, list[str]] = {}
    for name, path in _modules():
        tree = ast.parse(path.read_text("utf-8"))
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                 and n.func.attr in ("enqueue", "enqueue_once") and isinstance(n.func.value, ast.Name)
                 and n.func.value.id == "jobs"]
        if not calls:
            continue
        module = importlib.import_module(name)
        for call in calls:
            assert len(call.args) >= 2, f"{name}:{call.lineno}: enqueue(session, kind, …)"
            for kind in _kinds_of(module, call.args[1], tree, _enclosing(tree, call)):
                found.setdefault(kind, []).append(f"{name}:{call.lineno}")
    return found


def code_kinds() -> dict[str, str]:
    return {k: v for k, v in jobs.KINDS.items() if not v.startswith(("tests/", "bench/"))}


def test_every_enqueued_kind_is_declared():
    found = enqueued_kinds()
    assert {"survey_phone", "survey_chat", "sms_progress", "notify_resident", "transcribe_recording",
            "survey_call_check", "transcribe_survey_comment"} <= set(found)
    undeclared = {kind: where for kind, where in found.items() if kind not in jobs.KINDS}
    assert undeclared == {}, f"queued but never declared (no handler): {undeclared}"
    # and nothing is declared that nothing queues (a handler for work that never comes)
    assert set(code_kinds()) - set(found) == set()


def test_enqueue_refuses_an_undeclared_kind(engine):
    from core.platform.db import session_scope

    with pytest.raises(jobs.UnknownJobKind, match="survey_fone"), session_scope(engine) as session:
        jobs.enqueue(session, "survey_fone", {})


def test_the_server_with_every_channel_configured_takes_every_kind(engine, tmp_path):
    from gridline.app import SERVICES, build_app

    settings = Settings(data_dir=tmp_path, twilio_account_sid="AC" + "1" * 32, twilio_auth_token="t" * 32,
                        hotline_number="+14155550143", telegram_token="123456:" + "A" * 35)
    app = build_app(settings, engine=engine, speech=FakeTranscriber(), run_jobs=False)
    runner = app[SERVICES].jobs
    missing = {kind: where for kind, where in code_kinds().items() if not runner.takes(kind)}
    assert missing == {}, f"declared kinds no handler takes: {missing}"
    assert runner.paused == {}
    assert runner.lanes["survey_calls"] == ["survey_phone", "survey_call_check"]
