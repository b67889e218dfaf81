"""The local stack's stdout, shared by functions on several threads, keeps their lines whole."""

from __future__ import annotations

import io
import json
import threading
import time

from devstack.output import WholeLines


class YieldingStream(io.StringIO):
    """A stream that lets other threads run inside every write, as a busy machine would."""

    def write(self, text: str) -> int:
        time.sleep(0)
        return super().write(text)


def _print_from_threads(stream: io.TextIOBase, threads: int = 4, lines: int = 200) -> None:
    def emit(number: int) -> None:
        for index in range(lines):
            print(json.dumps({"thread": number, "line": index, "pad": "x" * 200}), file=stream)

    workers = [threading.Thread(target=emit, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stream.flush()


def _broken_lines(text: str) -> int:
    broken = 0
    for line in text.splitlines():
        try:
            json.loads(line)
        except ValueError:
            broken += 1
    return broken


def test_lines_printed_by_several_threads_come_out_whole() -> None:
    raw = YieldingStream()
    _print_from_threads(WholeLines(raw))
    lines = raw.getvalue().splitlines()
    assert len(lines) == 4 * 200
    assert _broken_lines(raw.getvalue()) == 0


def test_without_it_the_same_prints_break_lines() -> None:
    """The test above can fail: on the bare stream, the same prints interleave."""
    raw = YieldingStream()
    _print_from_threads(raw)
    assert _broken_lines(raw.getvalue()) > 0
