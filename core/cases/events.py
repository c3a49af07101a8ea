"""What follows a change of a case: its subscribers.

An action (``core.actions``) changes the case and writes its ``CaseEvent``; then
``core.actions._base.event`` publishes a ``CaseChange``. Each subscriber decides whether the
change concerns it and, if so, queues its durable job (a progress SMS, a chat notice, a
staff message) in the same session, so the job commits or vanishes with the change. A
subscriber that raises aborts the action: its transaction rolls back, as any error of the
action does.

Subscribers are registered at start-up by the package that owns them, in the order the
composition root (``gridline.wiring.wire``) calls them; they run in that order. Core never
imports the packages that subscribe (channels); it only calls what they registered.
Publishing before the composition root has wired the subscribers is an error, not a
silent change without its SMS and notices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session

from core.cases.models import Case, CaseStatus


@dataclass(frozen=True)
class CaseChange:
    """One change of a case, as its ``CaseEvent`` records it, with the session it is written in."""

    session: Session
    case: Case  # already changed: its status is ``to_status``
    action: str
    actor: str
    from_status: CaseStatus | None  # None when the case was just submitted
    to_status: CaseStatus
    reason: str | None
    data: dict[str, Any] | None
    at: datetime

    @property
    def status_changed(self) -> bool:
        """The case has a new status (a submitted case always has)."""
        return self.from_status != self.to_status


Subscriber = Callable[[CaseChange], None]


class NotWired(RuntimeError):
    """A case changed before the composition root registered what follows a change."""


class Subscribers:
    """Named subscribers, called in the order they were registered."""

    def __init__(self) -> None:
        self._by_name: dict[str, Subscriber] = {}
        self.wired = False

    def subscribe(self, name: str, subscriber: Subscriber) -> None:
        if name in self._by_name:
            raise ValueError(f"a subscriber named {name!r} is already registered")
        self._by_name[name] = subscriber

    def unsubscribe(self, name: str) -> None:
        self._by_name.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def mark_wired(self) -> None:
        """The composition root has registered every subscriber of the deployment."""
        self.wired = True

    def publish(self, change: CaseChange) -> None:
        if not self.wired:
            raise NotWired(
                f"case {change.case.number}: {change.action} published before the subscribers were wired "
                "(call gridline.wiring.wire() at start-up)"
            )
        for subscriber in tuple(self._by_name.values()):
            subscriber(change)


# The process's subscribers: one set, filled at start-up.
SUBSCRIBERS = Subscribers()
subscribe = SUBSCRIBERS.subscribe
unsubscribe = SUBSCRIBERS.unsubscribe
publish = SUBSCRIBERS.publish
