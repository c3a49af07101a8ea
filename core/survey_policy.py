"""The follow-up survey's answer scales and what an answer does to the case, read from
rules.toml ``[survey]`` so a district can change them without touching code."""

from __future__ import annotations

from core.rules import load_rules


def _survey() -> dict:
    return load_rules()["survey"]


def solved_scale() -> tuple[str, ...]:
    """"Is it solved?" answers, in the order they are offered (keypad 1, 2, 3 …)."""
    return tuple(_survey()["solved_scale"])


def satisfied_scale() -> tuple[str, ...]:
    """"Are you satisfied?" answers, in the order they are offered."""
    return tuple(_survey()["satisfied_scale"])


def closes_case(solved: str, satisfied: str) -> bool:
    """Whether this answer closes the case; any other answer reopens it."""
    rules = _survey()
    return solved in rules["closes_when_solved"] and satisfied in rules["closes_when_satisfied"]


def reopenings_before_escalation() -> int:
    """Dissatisfaction reopens the case this many times; after that it also climbs a level."""
    return int(_survey()["reopen_without_escalation"])
