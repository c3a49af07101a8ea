"""``gridline serve``: the web server with every channel, in one process or several."""

from __future__ import annotations

import logging
import os
import socket

import typer
from aiohttp import web

from core.platform.media_stores import media_store
from core.platform.settings import get_settings
from gridline.access_log import RedactingAccessLogger
from gridline.app import build_app, prepare_database
from gridline.commands.common import console, deprecated, fail, open_database
from gridline.logs import configure as configure_logging
from gridline.processes import Supervisor, listening_socket, stop_with_supervisor
from gridline.speech import build_speech


def serve(
    host: str = typer.Option(None, help="interface to listen on (GRIDLINE_HOST, default 127.0.0.1)"),
    port: int = typer.Option(None, help="port (GRIDLINE_PORT, default 8080)"),
    no_demo: bool = typer.Option(False, "--no-demo", help="do not load the demo district into an empty database"),
    listen_fd: int = typer.Option(None, "--listen-fd", help="serve on this already listening socket, "
                                  "inherited from a supervisor (socket activation); --host/--port are then ignored"),
    processes: int = typer.Option(1, "--processes", min=1,
                                  help="processes serving the one port, to use every core (e.g. the number of "
                                  "cores); a process that dies is started again"),
    workers: int = typer.Option(None, "--workers", min=1, hidden=True,
                                help="deprecated name of --processes (a worker is a grid worker)"),
    process_index: int = typer.Option(None, "--process-index", hidden=True,
                                      help="set by `serve --processes` for each process it starts"),
) -> None:
    """Upgrade the database, load the demo district if it is empty, and serve everything."""
    if workers is not None:
        if processes not in (1, workers):
            fail(f"--workers {workers} and --processes {processes}: --workers is the old name of --processes; "
                  "give only --processes")

        deprecated("serve --workers", "serve --processes")
        processes = workers
    several = processes > 1 or process_index is not None
    # --host/--port as if set in the environment: the public URL that follows them when
    # GRIDLINE_PUBLIC_URL is unset (the simulators', the console's hint) and the processes agree
    for name, value in (("GRIDLINE_HOST", host), ("GRIDLINE_PORT", port)):
        if value is not None:
            os.environ[name] = str(value)
    get_settings.cache_clear()
    settings = get_settings()
    # text, or one JSON object per line; ids on each line (and, under --processes, the process)
    configure_logging(settings.log_format, with_process=several)
    # With JSON logs every line the server writes is a log record, for the log shipper.
    say = _log_line if settings.log_format == "json" else console.print
    if process_index is None:  # a served process's supervisor prepared the database for all of them
        engine = open_database(migrated=False)
        store = media_store(settings)
        store.check()  # a wrong bucket, endpoint or key: one line naming the setting, before anything starts
        if prepare_database(engine, load_demo=settings.load_demo_on_empty and not no_demo):
            say("loaded the demo district into the empty database")
    if processes > 1:
        if settings.telegram_token and settings.telegram_mode == "polling":
            fail("--processes needs GRIDLINE_TELEGRAM_MODE=webhook: a bot is polled by one process only")
        engine.dispose()  # the processes open their own connections
        sock = socket.socket(fileno=listen_fd) if listen_fd is not None else \
            listening_socket(host or settings.host, port if port is not None else settings.port)
        raise typer.Exit(Supervisor(processes, sock).run())
    if process_index is not None:
        engine = open_database()
    app_ = build_app(settings, engine=engine, speech=build_speech(settings), server_gc=True)
    banner = _log_line if settings.log_format == "json" else print
    if process_index is not None:
        stop_with_supervisor(app_)
    if listen_fd is not None:
        # The supervisor keeps the socket across restarts of this process: callers who
        # connect while it restarts wait in the backlog instead of being refused.
        web.run_app(app_, sock=socket.socket(fileno=listen_fd), access_log_class=RedactingAccessLogger,
                    print=banner)
        return
    web.run_app(app_, host=host or settings.host, port=port if port is not None else settings.port,
                access_log_class=RedactingAccessLogger, print=banner)  # the path and a redacted query


def _log_line(*parts: object) -> None:
    logging.getLogger("gridline.serve").info(" ".join(str(p) for p in parts).strip())

