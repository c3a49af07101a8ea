"""Settings from the environment (prefix ``GRIDLINE_``), one object per process."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDLINE_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=PROJECT_ROOT / "var", description="recordings, photos, the SQLite file")
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means SQLite under data_dir")
    timezone: str = "Asia/Shanghai"
    public_url: str = Field(default="http://127.0.0.1:8080", description="base URL that Twilio and Telegram see")
    host: str = "127.0.0.1"
    port: int = 8080
    load_demo_on_empty: bool = True

    # speech
    speech_model: str = Field(default="", description="model directory or catalogue name")
    speech_workers: int = 2
    # Calls recognised live at once by this process (0: twice speech_workers); further calls
    # are recorded and transcribed afterwards by a transcribe_recording job.
    speech_live_streams: int = 0

    # hotline
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    twilio_api_url: str = Field(default="", description="override of Twilio's REST base URL (tests)")
    hotline_number: str = ""
    operator_number: str = ""
    service_hours: str = "08:30-17:30"

    # chat
    telegram_token: str = ""
    telegram_secret: str = ""
    telegram_api_url: str = ""
    telegram_mode: str = "webhook"

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


@lru_cache
def get_settings() -> Settings:
    return Settings()
