"""`gridline serve` for bench/chat.py --server process: the real command (every channel, the
job runner, the access log), with only the Telegram bot's options as the bench sets them,
because serve has no setting for them: Telegram's rate limiter off (--no-rate-limit) and
the updates handled at once.

usage: python bench/chat_serve.py OPTIONS_JSON serve [SERVE OPTIONS]
  e.g. python bench/chat_serve.py '{"rate_limit": false, "concurrency": 64}' serve --listen-fd 3
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import chat.web  # noqa: E402
from gridline.cli import main  # noqa: E402

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(print(__doc__))  # started by bench/chat.py, not by hand
    given = sys.argv[1]
    options = json.loads(given)
    # gridline.app's chat channel calls chat.web.setup(app, services) at start-up: same call, bench options
    chat.web.setup = functools.partial(chat.web.setup, **options)
    # With --processes, each process serving is started by the supervisor: through this
    # script too, or it would run the bot with its defaults (Telegram's limits on).
    from gridline import processes

    plain = processes.Supervisor._command

    def through_this_script(self, index: int) -> list[str]:
        command = plain(self, index)
        assert command[1:3] == ["-m", "gridline.cli"], command
        return [command[0], __file__, given, *command[3:]]

    processes.Supervisor._command = through_this_script
    sys.argv = ["gridline", *sys.argv[2:]]
    main()
