"""core.platform.i18n: one catalogue mechanism for every edge. The core catalogue knows every code
core raises, in every language it has; a language is added by adding files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.errors import IllegalTransition, InvalidInput, NotFound
from core.platform import i18n
from core.platform.i18n import CORE, Catalogue, error_text, reason_text, say

ROOT = Path(__file__).resolve().parents[3]
CODE = re.compile(r"""code=f?"([a-z_]+\.[a-z_.{}]+)\"""")


def _keys(table: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in table.items():
        out |= _keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return out


def _codes(*folders: str) -> set[str]:
    found = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            found |= set(CODE.findall(path.read_text("utf-8")))
    return found


def test_the_core_catalogues_have_the_same_keys():
    assert set(CORE.languages) >= {"zh", "en"} and CORE.languages[0] == "zh"
    assert _keys(CORE.table("zh")) == _keys(CORE.table("en"))


def test_every_code_core_raises_has_words_in_every_language():
    codes = _codes("core")
    assert {"case.illegal_transition", "merge.same_case", "routing.no_grid", "close.reason_required",
            "period.invalid"} <= codes
    missing = sorted(f"{lang}: errors.{code}" for code in codes for lang in CORE.languages
                     if not CORE.has(lang, f"errors.{code}"))
    assert missing == []


def test_every_code_the_console_raises_has_words(monkeypatch):
    from console.i18n import CONSOLE

    codes = {c for c in _codes("console") if "{" not in c}
    codes |= {f"console.required.{key}" for key in ("description", "grid", "into", "note")}
    missing = sorted(f"{lang}: {code}" for code in codes for lang in CONSOLE.languages
                     if not CONSOLE.has(lang, f"errors.{code}"))
    assert missing == []


def test_an_error_keeps_its_english_sentence_and_says_its_code_with_parameters():
    exc = IllegalTransition("case 2611170001: cannot reopen a case that is received", code="case.illegal_transition",
                            case="2611170001", action="reopen", status="received")
    assert str(exc) == "case 2611170001: cannot reopen a case that is received"
    assert exc.params == exc.details == {"case": "2611170001", "action": "reopen", "status": "received"}
    assert error_text("zh", exc) == "诉求 2611170001 当前为“已受理”，不能重办。"
    assert error_text("en", exc) == "Case 2611170001 is received: you cannot reopen it."


def test_an_error_without_words_keeps_its_sentence():
    assert error_text("zh", NotFound("no such thing")) == "no such thing"  # the class's default code
    assert error_text("zh", InvalidInput("odd", code="nobody.knows")) == "odd"


def test_reasons_people_typed_and_old_rows_are_shown_as_they_are():
    assert reason_text("zh", "居民说已经修好了") == "居民说已经修好了"
    assert reason_text("zh", "未在响应时限内签收（时限 2026-11-17 06:30 UTC）") == "未在响应时限内签收（时限 2026-11-17 06:30 UTC）"
    assert reason_text("en", None) is None
    assert reason_text("zh", "console.dispatched") == "话务员派遣"
    assert reason_text("en", "duplicate.near", {"reason_params": {"category": "路灯", "metres": "30", "hours": "2.0"}}) \
        == "路灯, 30 m apart, 2.0 hours between"


def test_a_language_is_added_by_adding_files(tmp_path, monkeypatch):
    """A folder in GRIDLINE_LOCALES with one language for core and the console: picked up
    with no change of code; keys it leaves out are said in Mandarin."""
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "fr.toml").write_text(
        '[status]\nreceived = "reçu"\n[verb]\nreopen = "rouvrir"\n'
        '[errors.case]\nillegal_transition = "Le dossier {case} est {status:@status} : impossible de le {action:@verb}."\n',
        "utf-8")
    (tmp_path / "console").mkdir()
    (tmp_path / "console" / "fr.toml").write_text('[nav]\ntriage = "À trier"\n', "utf-8")
    monkeypatch.setenv(i18n.ENV, str(tmp_path))
    from console.i18n import CONSOLE, languages, t
    from core.cases.texts import status_name

    assert "fr" in CORE.languages and "fr" in languages()
    assert status_name("received", "fr") == "reçu"
    assert status_name("closed", "fr") == "已结案"  # not in the French file: Mandarin's
    exc = IllegalTransition("x", code="case.illegal_transition", case="1", action="reopen", status="received")
    assert error_text("fr", exc) == "Le dossier 1 est reçu : impossible de le rouvrir."
    assert t("fr", "nav.triage") == "À trier" and CONSOLE.has("fr", "errors.case.illegal_transition")
    monkeypatch.delenv(i18n.ENV)
    assert "fr" not in CORE.languages


def test_an_extra_folder_overrides_words_of_a_packaged_language(tmp_path, monkeypatch):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "zh.toml").write_text('[status]\nclosed = "办结"\n', "utf-8")
    monkeypatch.setenv(i18n.ENV, str(tmp_path))
    assert CORE.t("zh", "status.closed") == "办结" and CORE.t("zh", "status.received") == "已受理"


def test_a_missing_key_is_a_bug():
    with pytest.raises(KeyError):
        Catalogue("nothing", ROOT / "core" / "locales").get("zh", "no.such.key")
    assert say("zh", "errors.no.such", default="as written") == "as written"


def test_words_missing_a_parameter_fall_back_to_what_was_written(caplog):
    assert reason_text("zh", "sweep.response_overdue", {}) == "sweep.response_overdue"
    assert "lacks a parameter" in caplog.text
