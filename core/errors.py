"""Domain errors: each says in plain words what was refused and why."""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class NotFound(DomainError):
    code = "not_found"


class IllegalTransition(DomainError):
    code = "illegal_transition"


class InvalidInput(DomainError):
    code = "invalid_input"


class ImportFailed(DomainError):
    """A bad import file; ``problems`` lists (line, message) and nothing was written."""

    code = "import_failed"

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        lines = "\n".join(f"  {source}:{line}: {msg}" for line, msg in problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{source}: {len(problems)} problem(s), nothing imported\n{lines}{more}")
        self.problems = problems


class DatabaseBusy(Exception):
    """Every database thread is taken and the wait for one ran out, or too many requests are
    already waiting: answer "busy, please try again" (HTTP 503) instead of queueing forever."""

    code = "database_busy"
    # A moment later it may well work: callers that retry (the chat inbox) retry this.
    transient = True
