"""Settings from the environment (prefix ``GRIDLINE_``), one object per process."""

from __future__ import annotations

import ipaddress
from datetime import time
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.platform.media import parse_media_url

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDLINE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=PROJECT_ROOT / "var", description="recordings, photos, the SQLite file")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under data_dir")
    timezone: str = "Asia/Shanghai"
    # Unset: where this machine serves (GRIDLINE_HOST, GRIDLINE_PORT), so the simulators reach it.
    public_url: str = Field(default="", description="base URL that Twilio and Telegram see")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    load_demo_on_empty: bool = True
    # Where files of cases live (core.platform.media): empty = the data directory; file:///folder;
    # s3://bucket/prefix with the standard AWS_* variables for endpoint and credentials.
    media_url: str = Field(default="", description="media store: empty, file:///folder or s3://bucket/prefix")

    # speech
    speech_model: str = Field(default="", description="model directory or catalogue name")
    speech_language: str = Field(default="zh", description="only a model of this language is picked "
                                 "unless speech_model names one")
    speech_workers: int = Field(default=2, ge=0)
    # Recognise in the server's own threads instead of speech_workers processes of its own
    # (processes keep decoding off the server's GIL; threads share one copy of the model).
    speech_in_process: bool = False

    # database threads: 0 = as many as the engine's connection pool holds
    db_threads: int = Field(default=0, ge=0)
    # requests that may wait for a database thread; more are told "busy" at once
    db_queue: int = Field(default=64, ge=0)
    # how long a request waits for a database thread before it is told "busy"
    db_wait_seconds: float = Field(default=5.0, gt=0)
    # Calls recognised live at once by this process (0: twice speech_workers); further calls
    # are recorded and transcribed afterwards by a transcribe_recording job.
    speech_live_streams: int = Field(default=0, ge=0)

    # hotline
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_url: str = Field(default="", description="override of Twilio's REST base URL (tests)")
    # Progress SMS are sent from this Messaging Service when set, else from hotline_number.
    twilio_messaging_service_sid: str = ""
    hotline_number: str = ""
    operator_number: str = ""
    service_hours: str = "08:30-17:30"
    # Live audio: a part of what was said since the last one reaches the media store (or,
    # when the spool failed, the database) after this many seconds of audio.
    spool_part_s: float = Field(default=10.0, gt=0, le=60)
    # When the spool folder fails (read-only, full), a call's audio not yet stored anywhere
    # is held in memory up to this many seconds, and up to spool_database_s seconds of it in
    # the database when the media store will not take it either.
    spool_memory_s: float = Field(default=600.0, ge=0)
    spool_database_s: float = Field(default=1800.0, ge=0)

    # chat
    telegram_token: str = ""
    telegram_secret: str = ""
    telegram_api_url: str = ""
    telegram_mode: str = "webhook"
    telegram_local_mode: bool = Field(default=False, description="the Bot API server is a local one started "
                                      "with --local: files may be read from the paths it names")
    # web chat (chat.resident_web): the key that signs device cookies and grid QR codes;
    # empty: one made by the first instance and kept in the database
    web_chat_secret: str = ""

    # observability (gridline.metrics, gridline.logs)
    log_format: str = Field(default="text", description="text, or json: one JSON object per line")
    # /metrics answers a scraper that sends this bearer token, or one whose own address is in
    # metrics_allow; with neither set it is off (404).
    metrics_token: str = ""
    metrics_allow: str = Field(default="", description="addresses or networks, comma-separated")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("not a time zone name like Asia/Shanghai") from None
        return value

    @field_validator("service_hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            start, _, end = part.partition("-")
            try:
                if not (len(start.strip()) == 5 and len(end.strip()) == 5
                        and time.fromisoformat(start.strip()) < time.fromisoformat(end.strip())):
                    raise ValueError
            except ValueError:
                raise ValueError(f"{part!r} is not a period like 08:30-17:30 (several: 08:30-12:00,13:30-17:30)") from None
        return value

    @field_validator("media_url")
    @classmethod
    def _media_url(cls, value: str) -> str:
        parse_media_url(value)  # its ValueError says what is wrong
        return value.strip()

    @model_validator(mode="after")
    def _local_public_url(self) -> Settings:
        if not self.public_url:
            host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host
            self.public_url = f"http://{host}:{self.port}"
        return self

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://, e.g. https://hotline.example.org")
        return value

    @field_validator("telegram_secret")
    @classmethod
    def _secret(cls, value: str) -> str:
        if value and not (len(value) <= 256 and all(c.isascii() and (c.isalnum() or c in "_-") for c in value)):
            raise ValueError("1–256 characters of A-Z a-z 0-9 _ -")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.lower() not in ("text", "json"):
            raise ValueError("must be text or json")
        return value.lower()

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is not an address or network like 10.0.0.5 or 10.0.0.0/24") from None
        return value

    @field_validator("metrics_token")
    @classmethod
    def _long_token(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("at least 16 characters (e.g. python -c 'import secrets; print(secrets.token_urlsafe())')")
        return value

    @field_validator("telegram_mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("webhook", "polling"):
            raise ValueError("must be webhook or polling")
        return value

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return normalise_database_url(self.database_url)
        return f"sqlite:///{self.data_dir / 'gridline.sqlite3'}"


def normalise_database_url(url: str) -> str:
    """Accept the plain ``postgresql://`` form people copy from docs; we drive psycopg 3."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class SettingsInvalid(ValueError):
    """``GRIDLINE_*`` values that cannot be used; the message names each one."""


def explain_validation(exc: ValidationError) -> str:
    """One line per bad value: ``GRIDLINE_PORT='abc': Input should be a valid integer``."""
    parts = []
    for error in exc.errors():
        name = "GRIDLINE_" + "_".join(str(p) for p in error["loc"]).upper()
        given = error.get("input")
        shown = f"={given!r}" if isinstance(given, str | int | float) else ""
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{name}{shown}: {message}")
    return "; ".join(parts)


@lru_cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsInvalid(explain_validation(exc)) from None
