"""console.i18n: every key a template asks for exists in both catalogues, and the
catalogues have the same keys."""

from __future__ import annotations

import re
from pathlib import Path

from console.i18n import LANGUAGES, catalogue, has, t

TEMPLATES = Path(__file__).resolve().parents[2] / "console" / "templates"


def _keys(table: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in table.items():
        out |= _keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
    return out


def test_catalogues_have_the_same_keys():
    assert _keys(catalogue("zh")) == _keys(catalogue("en"))


def test_every_literal_key_in_the_templates_exists():
    used = set()
    for path in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\('([a-z_.]+[a-z_])'\s*[,)]""", path.read_text("utf-8")))
    assert len(used) > 50
    missing = sorted(k for k in used for lang in LANGUAGES if not has(lang, k))
    assert missing == []


def test_lookup_formats_and_falls_back_to_mandarin():
    assert t("zh", "case.title", number="2611170001") == "诉求 2611170001"
    assert t("en", "case.title", number="2611170001") == "Case 2611170001"
    assert t("fr", "nav.triage") == t("zh", "nav.triage")
