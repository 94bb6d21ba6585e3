"""Big batches of the SQLite view written by a process of its own.

Catching up, the projector's event loop receives and decodes thousands of messages a second
while the write of the batch before runs. In one process the two take turns at the interpreter
lock: ``executemany`` lets go of it for every row's step and has to win it back from the busy
loop each time, so the write advances only when the loop idles (measured: the writer alone
writes 16,000-18,000 events a second; beside a busy thread, about a hundred). A worker process
has a lock of its own: it decodes the batch's stored JSON, folds and writes it on its own
connection to the same file, while the loop receives the next batch on the other core.

Nothing else changes: the projector still writes one batch at a time and in stream order, the
batch is one transaction with the position (skipped if already applied), and it is made
durable and acknowledged by the projector as before. A worker that dies mid-batch leaves
nothing half-written in the file (SQLite's log); the projector writes the batch again on a new
one.

The worker is ``python -m approvals.projections.status.bulk <view file>``, talking over its
standard input and output in frames (a 4-byte length, then MessagePack): a batch of
``[notification id, stored JSON]`` in, ``{"changed": [approval id bytes]}`` or
``{"error": text}`` out. It imports only what writing needs, and stops when its input closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import signal
import struct
import sys
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

import msgspec

from approvals.schemas.codec import event_decoder

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from approvals.projections.status.view import Projected, StatusView
    from approvals.schemas.queries import ApprovalView

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
PIPE_BYTES = 1 << 20  # Linux's default limit for a pipe's buffer
_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(list[tuple[int, bytes]])
_reply_decoder = msgspec.msgpack.Decoder(dict[str, Any])


class WriterGone(RuntimeError):
    """The worker process died or broke the protocol; the batch is written again on a new one."""


class ChangedIds(Collection[UUID]):
    """The approvals a batch changed, as the worker sent them (16 bytes each): made into UUIDs
    only when asked (the waiters look up the few they wait for)."""

    def __init__(self, raw: list[bytes]) -> None:
        self._raw = raw
        self._set: set[bytes] | None = None

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[UUID]:
        return (UUID(bytes=approval_id) for approval_id in self._raw)

    def __contains__(self, item: object) -> bool:
        if self._set is None:
            self._set = set(self._raw)
        return isinstance(item, UUID) and item.bytes in self._set


class BulkWriter:
    """Writes big batches of the SQLite view at ``path`` in one worker process, started when the
    first big batch comes (a projector that follows live traffic writes on its loop and never
    starts it) and kept until ``close``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._process: asyncio.subprocess.Process | None = None

    async def project(self, stored: Sequence[tuple[int, bytes]]) -> ChangedIds:
        """Write the batch (notification ids and stored JSON, in order); the approvals whose
        rows it changed."""
        process = self._process or await self._start()
        assert process.stdin is not None
        assert process.stdout is not None
        frame = _encoder.encode(stored)
        try:
            process.stdin.write(_HEADER.pack(len(frame)) + frame)
            await process.stdin.drain()
            (size,) = _HEADER.unpack(await process.stdout.readexactly(_HEADER.size))
            reply = _reply_decoder.decode(await process.stdout.readexactly(size))
        except (OSError, asyncio.IncompleteReadError, msgspec.DecodeError) as error:
            await self.close()
            raise WriterGone(f"the view's writer process stopped ({error!r})") from error
        if "error" in reply:
            raise RuntimeError(f"the view's writer process failed: {reply['error']}")
        return ChangedIds(reply["changed"])

    async def _start(self) -> asyncio.subprocess.Process:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, self.path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stdin is not None
        pipe = self._process.stdin.transport.get_extra_info("pipe")
        with contextlib.suppress(OSError, AttributeError):
            # A batch is megabytes: in a few writes, not one per 64 KiB the worker reads.
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return self._process

    async def close(self) -> None:
        """Close its input (it stops after the batch in hand) and reap it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def project_in_bulk(view: StatusView, batch: Sequence[Projected]) -> dict[UUID, ApprovalView]:
    """``view.project`` with the cyclic garbage collector paused.

    A big batch allocates tens of thousands of containers (events, rows, tuples; no cycles:
    reference counting frees them), and each collection they trigger walks everything young,
    the batch itself and the messages queued behind it: a fifth to a quarter of the writer's
    time when it catches up. The pause is the whole process's (the loop runs on meanwhile);
    collections resume after the batch, if they ran before."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return view.project(batch)
    finally:
        if was_enabled:
            gc.enable()


def decode_stored(stored: Sequence[tuple[int, bytes]]) -> list[Projected]:
    """Events with their notification ids and stored JSON. What is not an event is logged and
    skipped; an event of a newer schema version raises (UnknownSchemaVersion): the view stops
    there until the service is upgraded, since skipping it would leave the view wrong for ever."""
    batch: list[Projected] = []
    for nid, raw in stored:
        try:
            batch.append((nid, event_decoder.decode(raw), raw))
        except (ValueError, msgspec.DecodeError) as error:
            log.error("skipping notification %d, which is not an event (%s)", nid, error)
    return batch


def write(view: StatusView, stored: list[tuple[int, bytes]]) -> list[bytes]:
    """In the worker: decode, fold and write one batch; the changed approvals' ids (16 bytes)."""
    return [approval_id.bytes for approval_id in project_in_bulk(view, decode_stored(stored))]


def main(path: str) -> None:
    """The worker: one batch at a time from standard input, each reply on standard output."""
    # A terminal's Ctrl-C reaches the whole process group: the service stops its worker
    # itself, in order, by closing its input after the batch in hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from approvals.projections.status.sqlite import SQLiteStatusView, view_factory

    view = view_factory(Path(path)).tracking_recorder(SQLiteStatusView)
    assert isinstance(view, SQLiteStatusView)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while len(header := source.read(_HEADER.size)) == _HEADER.size:
        (size,) = _HEADER.unpack(header)
        frame = source.read(size)
        if len(frame) < size:
            break
        try:
            reply: dict[str, Any] = {"changed": write(view, _batch_decoder.decode(frame))}
        except Exception as error:  # told to the service, which retries the batch
            log.exception("writing a batch of the status view failed")
            reply = {"error": f"{type(error).__name__}: {error}"}
        out = _encoder.encode(reply)
        sink.write(_HEADER.pack(len(out)) + out)
        sink.flush()
    view.datastore.close()


if __name__ == "__main__":
    main(sys.argv[1])
