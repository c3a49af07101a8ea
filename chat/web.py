"""Placeholder until the chat bot lands (issue 5)."""


def setup(app, services) -> None:  # noqa: ANN001
    return None
