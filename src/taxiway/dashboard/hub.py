"""The open event streams, bounded: how many, and how much each may have waiting.

Every open dashboard tab holds one stream (state, chart points, its log tail). The daemon
runs the app's edge on the same event loop, so a tab must never cost more than a few
queued messages: at most `MAX_STREAMS` streams, each with at most `QUEUE_SIZE` events
waiting to be written; a client that reads too slowly to keep its queue from filling is
dropped (its connection closed), never buffered for. Broadcasts hand the same bytes to
every stream (`taxiway.dashboard.http.event_chunk`): no per-client encoding.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

#: Open streams per daemon; the next one is answered 503.
MAX_STREAMS = 64
#: Events waiting per stream before its client counts as too slow and is dropped.
QUEUE_SIZE = 16
#: Bytes the transport may hold for a stream before writes wait (then the queue fills).
WRITE_BUFFER_BYTES = 64 * 1024


class Stream:
    """One client's event stream: its queue and what it asked for."""

    def __init__(self, kind: str, selection: Callable[[dict], bool] | None = None) -> None:
        self.kind = kind
        #: Which log lines it shows.
        self.selection = selection
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        #: The task writing the stream: cancelled to drop a slow client.
        self.task: asyncio.Task[None] | None = None
        self.dropped = False


class StreamHub:
    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        self.max_streams = max_streams
        self.streams: set[Stream] = set()
        #: Clients dropped for reading too slowly (shown on the page, kept for tests).
        self.dropped_count = 0

    def join(self, stream: Stream) -> bool:
        """Take the stream in, or False when `max_streams` are open."""
        if len(self.streams) >= self.max_streams:
            return False
        stream.task = asyncio.current_task()
        self.streams.add(stream)
        return True

    def leave(self, stream: Stream) -> None:
        self.streams.discard(stream)

    def of_kind(self, kind: str) -> list[Stream]:
        return [s for s in self.streams if s.kind == kind]

    def send(self, stream: Stream, chunk: bytes) -> None:
        """Queue ``chunk`` for one stream; a full queue drops the stream."""
        try:
            stream.queue.put_nowait(chunk)
        except asyncio.QueueFull:
            self.drop(stream)

    def broadcast(self, kind: str, chunk: bytes) -> None:
        for stream in self.of_kind(kind):
            self.send(stream, chunk)

    def drop(self, stream: Stream) -> None:
        if stream.dropped:
            return
        stream.dropped = True
        self.dropped_count += 1
        self.streams.discard(stream)
        if stream.task is not None:
            stream.task.cancel()

    def close(self) -> None:
        for stream in list(self.streams):
            if stream.task is not None:
                stream.task.cancel()
        self.streams.clear()
