"""Settings from the environment: what follows from what when it is not set."""

from __future__ import annotations

import pytest

from core.platform.settings import Settings

ENV = ("GRIDLINE_PUBLIC_URL", "GRIDLINE_HOST", "GRIDLINE_PORT")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def test_the_public_url_follows_the_port_when_it_is_not_set(monkeypatch):
    assert Settings().public_url == "http://127.0.0.1:8080"
    monkeypatch.setenv("GRIDLINE_PORT", "8097")
    assert Settings().public_url == "http://127.0.0.1:8097"  # the simulators and the console's hint reach it
    monkeypatch.setenv("GRIDLINE_HOST", "0.0.0.0")  # every interface: reached locally on 127.0.0.1
    assert Settings().public_url == "http://127.0.0.1:8097"
    monkeypatch.setenv("GRIDLINE_HOST", "10.1.2.3")
    assert Settings().public_url == "http://10.1.2.3:8097"


def test_a_public_url_given_is_kept_whatever_the_port(monkeypatch):
    monkeypatch.setenv("GRIDLINE_PORT", "8097")
    monkeypatch.setenv("GRIDLINE_PUBLIC_URL", "https://hotline.example.org")
    assert Settings().public_url == "https://hotline.example.org"


def test_a_public_url_that_is_no_url_is_refused(monkeypatch):
    monkeypatch.setenv("GRIDLINE_PUBLIC_URL", "hotline.example.org")
    with pytest.raises(ValueError, match="must start with http"):
        Settings()
