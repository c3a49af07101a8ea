"""What follows a change of a case, wired once per process: each package that owns a
consequence registers its subscriber (``core.cases.events``), here, in a fixed order, which is
also the order their jobs are queued in. Every entry point that can change a case calls
``wire()`` before it does: the web app (``gridline.app.build_app``), every CLI command
when it opens the database (``gridline.commands.common.open_database``), the bench scripts
and the tests' fixtures. A process that did not is
told so by the first change (``core.cases.events.NotWired``), never silently left without its
SMS and notices."""

from __future__ import annotations

import threading

import chat.notices
import core.followup.sms
import core.people.staff
from core.cases import events

_lock = threading.Lock()


def wire() -> None:
    """Register every subscriber, once (a second call does nothing)."""
    with _lock:
        if events.SUBSCRIBERS.wired:
            return
        chat.notices.subscribe()  # the resident's chat hears of a new status
        core.followup.sms.subscribe()  # a hotline caller's mobile hears of a new status
        core.people.staff.subscribe()  # grid workers, departments and leaders hear of what concerns them
        events.SUBSCRIBERS.mark_wired()
