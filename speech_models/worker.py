"""A recogniser process: ``python -m speech_models.worker READ_FD WRITE_FD``.

Started by ``speech_models.procpool.ProcessSpeechPool``, never by hand. It reads requests
from READ_FD and writes one answer per request to WRITE_FD, in order, each a frame of a
4-byte big-endian length and a pickle (both ends are this package; nothing else writes to
these pipes, so pickle is safe here). The first frame is ``(sys.path, pickled factory)``:
the process makes its transcriber with ``factory()`` and keeps it, and the streams opened on
it, until READ_FD ends (the server closed the pipe or died).

Its own process, so that decoding and the Python work around it (resampling, dither,
JSON of each result) never hold the server's GIL. Standard output and error are the
server's, for logs; the answers go only through WRITE_FD.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys
import time

HEADER = struct.Struct(">I")
NO_REPLY = -1  # a request id that wants no answer (dropping an abandoned stream)
NICENESS = 10  # recognition yields the CPU to the web server when the cores are full


def read_exact(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or ``None`` at end of file."""
    parts, got = [], 0
    while got < n:
        piece = os.read(fd, n - got)
        if not piece:
            return None
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def read_frame(fd: int):
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    body = read_exact(fd, HEADER.unpack(head)[0])
    if body is None:
        return None
    return pickle.loads(body)


def frame(obj) -> bytes:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Recogniser:
    """The transcriber of this process and its open streams, keyed by the server's ids."""

    def __init__(self, transcriber):
        self.transcriber = transcriber
        self.streams: dict[str, object] = {}

    def handle(self, op: str, args: tuple):
        return getattr(self, f"op_{op}")(*args)

    def op_warm_up(self) -> int:
        self.transcriber.warm_up()
        return os.getpid()

    def op_open(self, sid: str, sample_rate: int, phrases, encoding: str, partials: bool) -> None:
        self.streams[sid] = self.transcriber.open_stream(sample_rate, phrases, encoding, partials=partials)

    def op_accept(self, sid: str, data: bytes):
        return self.streams[sid].accept(data)

    def op_finish(self, sid: str, tail: bytes):
        stream = self.streams.pop(sid)
        segments = stream.accept(tail) if tail else []
        return segments, stream.finish()

    def op_replay(self, sid: str, open_args: tuple, audio: bytes, finishing: bool):
        """A stream whose process died, opened again here and given all its audio so far:
        the same audio gives the same segments (``transcriber`` is reproducible)."""
        self.op_open(sid, *open_args)
        segments = self.streams[sid].accept(audio) if audio else []
        if finishing:
            return segments, self.streams.pop(sid).finish()
        return segments

    def op_drop(self, sid: str) -> None:
        self.streams.pop(sid, None)

    def op_file(self, path, phrases):
        return self.transcriber.transcribe_file(path, phrases)

    def op_pcm(self, pcm: bytes, sample_rate: int, phrases):
        return self.transcriber.transcribe_pcm(pcm, sample_rate, phrases)

    def op_accepts_phrases(self, phrases) -> bool:
        grammar = getattr(self.transcriber, "grammar", None)
        if grammar is None:
            return True
        try:
            grammar(list(phrases))
        except ValueError:
            return False
        return True


def answer(req_id: int, ok: bool, value, busy_s: float) -> bytes:
    try:
        return frame((req_id, ok, value, busy_s))
    except Exception as e:  # an exception (or result) that does not pickle: say what it was
        return frame((req_id, False, RuntimeError(f"{type(value).__name__}: {value} ({e})"), busy_s))


def main(argv: list[str]) -> int:
    read_fd, write_fd = int(argv[1]), int(argv[2])
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
    first = read_frame(read_fd)
    if first is None:
        return 0
    path, factory = first  # the factory comes pickled: it may live where only path finds it
    sys.path[:0] = [p for p in path if p not in sys.path]
    recogniser = Recogniser(pickle.loads(factory)())
    while (request := read_frame(read_fd)) is not None:
        req_id, op, args = request
        started = time.perf_counter()
        try:
            value, ok = recogniser.handle(op, args), True
        except Exception as e:
            value, ok = e, False
        if req_id != NO_REPLY:
            write_all(write_fd, answer(req_id, ok, value, time.perf_counter() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
