"""Deployment settings of the console (environment, prefix ``GRIDLINE_``). What people tune
per district (roles, login limits, triage flags) is rules data in rules.toml ``[console]``."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRIDLINE_", env_file=".env", extra="ignore")

    public_url: str = "http://127.0.0.1:8080"
    # Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For we
    # believe. Empty: the peer address is the client, and the header is ignored.
    trusted_proxies: str = Field(default="")

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.lower().startswith("https://")

    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        nets = []
        for part in self.trusted_proxies.split(","):
            part = part.strip()
            if part:
                nets.append(ipaddress.ip_network(part, strict=False))
        return tuple(nets)


@lru_cache
def get_console_settings() -> ConsoleSettings:
    return ConsoleSettings()
