"""Placeholder until the hotline routes land (issue 4)."""


def setup(app, services) -> None:  # noqa: ANN001
    return None
