"""Domain errors: each says what was refused and why, twice — as a ``code`` with ``params``
for the edges to put into the person's words (``core/platform/i18n.py``, ``errors.<code>`` of
``core/locales/<lang>.toml``), and as an English sentence for logs and the CLI (``str(e)``)."""

from __future__ import annotations


class DomainError(Exception):
    code = "domain_error"  # each class's default; a raise names its precise code

    def __init__(self, message: str, *, code: str | None = None, **params):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.params = params

    @property
    def details(self) -> dict:  # the older name of ``params``
        return self.params


class NotFound(DomainError):
    code = "not_found"


class IllegalTransition(DomainError):
    code = "illegal_transition"


class InvalidInput(DomainError):
    code = "invalid_input"


class TextTooLong(InvalidInput):
    """A text longer than rules.toml ``[limits]`` allows for its kind of field; channels
    say so in the person's language from ``field`` and ``limit`` (characters)."""

    code = "text.too_long"

    def __init__(self, field: str, limit: int, length: int):
        super().__init__(f"{field} is too long: {length} characters, at most {limit}",
                         field=field, limit=limit, length=length)
        self.field, self.limit, self.length = field, limit, length


class TooManyPetitions(DomainError):
    """More petitions from one resident or phone number within the window than a channel
    that may refuse accepts (rules.toml ``[intake.flood]``); ``retry_after`` in seconds."""

    code = "intake.too_many_petitions"

    def __init__(self, count: int, window_minutes: int, retry_after: int):
        super().__init__(f"{count} petitions from this resident or phone number in the last {window_minutes} "
                         f"minutes; send again in {retry_after} seconds",
                         count=count, window_minutes=window_minutes, retry_after=retry_after)
        self.retry_after = retry_after


class ImportFailed(DomainError):
    """A bad import file; ``problems`` lists (line, message) and nothing was written."""

    code = "import_failed"

    def __init__(self, source: str, problems: list[tuple[int, str]]):
        lines = "\n".join(f"  {source}:{line}: {msg}" for line, msg in problems[:50])
        more = f"\n  … and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"{source}: {len(problems)} problem(s), nothing imported\n{lines}{more}",
                         code="import.failed", source=source, count=len(problems))
        self.problems = problems


class DatabaseBusy(Exception):
    """Every database thread is taken and the wait for one ran out, or too many requests are
    already waiting: answer "busy, please try again" (HTTP 503) instead of queueing forever."""

    code = "database_busy"
    # A moment later it may well work: callers that retry (the chat inbox) retry this.
    transient = True
