"""LeaseClient: the dispatcher's side of DispatchService.Lease.

One stream to the scheduler. It announces its capacity, runs each granted
call as a task, and reports results on the stream, keeping the credit it has
given plus the calls it runs at its capacity. Results stay until the
scheduler acks them and are sent again after a reconnect (the scheduler still
takes them while their leases live). Reconnects back off exponentially with
jitter (tenacity).

A new capacity (SIGHUP) reaches the scheduler on a fresh stream: the client
ends its side of the current one, reads it to its end (every grant already
sent still arrives and runs, every result is acked) and says hello again.
Stopping tells the scheduler `draining` and waits for its confirmation (its
echoed `drain`; or a short settle time from schedulers that do not echo), so
no grant is still on the way when the client closes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from typing import Awaitable, Callable

import grpc
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from .. import __version__
from ..common.grpcutil import DEFAULT_MAX_MESSAGE_BYTES, message_options, runs_within
from ..registry import RegistryError
from ..v1 import dispatch_service_pb2 as pb
from .call import CallOutcome, ErrorKind, Sender
from .convert import lease_result, outgoing_call
from .stream import LeaseCall, Transport, grpc_transport

log = logging.getLogger(__name__)
HEALTHY_STREAM_S = 5.0  # a stream that lived this long resets the reconnect backoff
# Calls that begin in one turn of the event loop. A grant message can carry hundreds; each call's
# first step (building the request) runs before any of them is written to its socket, so without
# a limit the first call of a burst leaves only after all have been prepared.
STARTS_PER_TURN = 32
DRAIN_SETTLE_S = 0.5  # without the scheduler's drain echo, grants sent before it saw `draining` arrive by then


def new_dispatcher_id() -> str:
    """A dispatcher id unique to this process: host, pid and a random tail."""
    return f"dispatcher-{os.uname().nodename}-{os.getpid()}-{os.urandom(3).hex()}"

class StreamEnded(Exception):
    """The Lease stream ended or could not be opened; connect again."""


class LeaseClient:
    def __init__(
        self, *, sender: Sender, discover: Callable[[], Awaitable[str]], capacity: int,
        dispatcher_id: str | None = None, max_backoff_s: float = 5.0,
        credentials: Callable[[], grpc.ChannelCredentials | None] = lambda: None, metadata: tuple = (),
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, transport: Transport | None = None,
    ) -> None:  # fmt: skip
        """credentials: TLS for each new connection (read anew each time; None: plaintext);
        metadata: sent with the stream (`authorization: Bearer NOTIFY_TOKEN`);
        max_message_bytes: the largest message sent or accepted (NOTIFY_MAX_MESSAGE_BYTES);
        transport: opens the Lease call to an address (default: gRPC with the settings above)."""
        self.dispatcher_id = dispatcher_id or new_dispatcher_id()
        self.capacity = capacity
        self.calls_done = 0
        self._sender = sender
        self._discover = discover
        self._max_backoff = max_backoff_s
        self._running: dict[str, asyncio.Task] = {}
        self._unacked: dict[str, pb.LeaseResult] = {}
        self._unsent: list[str] = []
        self._outstanding = 0  # credit the scheduler holds on this stream: given minus grants received
        self._reopen = False  # end this stream gracefully and say hello again (new capacity)
        self._draining = False
        self._stopping = False  # stop() was called: drain on every stream from now on
        self._drain_sent = False
        self._drain_confirmed = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._connected = asyncio.Event()
        self._call: LeaseCall | None = None
        self._generation = 0  # which stream's writer is the live one
        self._transport = transport or grpc_transport(credentials, metadata, message_options(max_message_bytes))
        self._budget = max(1024, max_message_bytes - 4096)  # results per LeaseRequest stay under the limit
        self._starts_left = STARTS_PER_TURN  # calls that may still begin in this loop turn
        self._starts_reset = False
        self._turn_line: deque[asyncio.Future] = deque()  # calls waiting for a turn, first come first

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def set_capacity(self, capacity: int) -> None:
        """Runs at most `capacity` calls from now on. Growing gives credit on a fresh
        stream at once; shrinking gives none until fewer calls than that run."""
        if capacity == self.capacity:
            return
        log.info("dispatcher %s capacity %d -> %d", self.dispatcher_id, self.capacity, capacity)
        self.capacity = capacity
        if self._connected.is_set():
            self._reopen = True
            self._wake.set()

    async def run(self) -> None:
        """Keeps a stream open until stop(); returns then."""
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.05, max=self._max_backoff, jitter=0.05),
            retry=retry_if_exception_type((StreamEnded, grpc.RpcError, OSError, LookupError, RegistryError)),
            before_sleep=lambda rs: log.warning("scheduler stream down (%s); reconnecting", rs.outcome.exception()),
        )
        while not self._stopped.is_set():
            try:
                await retrying(self._stream_once)
            except asyncio.CancelledError:
                raise

    async def wait_connected(self, timeout: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def stop(self, grace_s: float) -> None:
        """Takes no more work, finishes calls in flight within grace_s, reports them, closes."""
        if self._stopped.is_set():
            return
        self._draining = self._stopping = True
        self._wake.set()
        now = time.monotonic()
        deadline, settled = now + grace_s, now + DRAIN_SETTLE_S
        while time.monotonic() < deadline and (
            self._running or self._unacked
            or (self._connected.is_set() and not self._drain_confirmed.is_set() and time.monotonic() < settled)
        ):  # fmt: skip
            await asyncio.sleep(0.02)
        for task in list(self._running.values()):
            task.cancel()
        if self._running or self._unacked:
            log.warning("stopped with %d calls running and %d results unacked; their leases expire and are granted again",
                        len(self._running), len(self._unacked))  # fmt: skip
        self._stopped.set()
        self._wake.set()
        if self._call is not None:
            self._call.cancel()

    # --- one stream -----------------------------------------------------

    async def _stream_once(self) -> None:
        if self._stopped.is_set():
            return
        addr = await self._discover()
        opened = time.monotonic()
        async with self._transport(addr) as call:
            self._call = call
            writer = asyncio.create_task(self._write(call), name="lease-writer")
            try:
                await call.initial_metadata()
                self._connected.set()
                async for resp in call:
                    self._on_response(resp)
            except asyncio.CancelledError:
                # grpc.aio raises this when the call itself was cancelled; only a cancel of
                # this task (or stop) ends the client, anything else is a stream to reopen.
                if self._stopped.is_set() or asyncio.current_task().cancelling():
                    raise
                raise StreamEnded(f"stream to {addr} was cancelled") from None
            except grpc.RpcError as e:
                if self._stopped.is_set():
                    return
                if time.monotonic() - opened < HEALTHY_STREAM_S:
                    raise
                log.warning("scheduler stream at %s broke: %s", addr, e.code())
            finally:
                self._connected.clear()
                self._call = None
                self._generation += 1  # the writer of this stream stops at its next wake
                self._wake.set()
                if not writer.done():
                    writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        if self._reopen:
            return  # ended on purpose: run() says hello again at once
        if not self._stopped.is_set() and time.monotonic() - opened < HEALTHY_STREAM_S:
            raise StreamEnded(f"stream to {addr} ended")

    def _hello(self) -> pb.LeaseRequest:
        # Hello and the credit reset happen together: calls finishing from now
        # on give credit on this stream; those already done are not running.
        self._unsent = []
        self._reopen = False
        self._draining = self._stopping  # a drain the scheduler asked for ends with its stream
        self._drain_sent = self._draining
        self._drain_confirmed.clear()
        hello = pb.DispatcherHello(
            dispatcher_id=self.dispatcher_id, version=__version__, capacity=self.capacity,
            credit=0 if self._draining else max(0, self.capacity - len(self._running)),
        )  # fmt: skip
        self._outstanding = hello.credit
        first = pb.LeaseRequest(hello=hello, draining=self._draining)
        log.info("dispatcher %s opening stream (credit %d, %d results to report)",
                 self.dispatcher_id, hello.credit, len(self._unacked))  # fmt: skip
        return first

    async def _write(self, call) -> None:
        """The stream's one writer: hello, then whatever is ready each time it wakes, in one
        LeaseRequest (every result finished since the last write, credit, draining)."""
        generation = self._generation
        try:
            hello = self._hello()
            first, *rest = runs_within(list(self._unacked.values()), self._budget, _result_cost)
            hello.results.extend(first)
            await call.write(hello)
            for part in rest:  # every unacked result again, in messages within the limit
                await call.write(pb.LeaseRequest(results=part))
            while not self._stopped.is_set():
                await self._wake.wait()
                if generation != self._generation:
                    return  # this stream ended
                self._wake.clear()
                if self._reopen:
                    await call.done_writing()  # the scheduler acks what it got, sends what it has, ends the stream
                    return
                ids, self._unsent = self._unsent, []
                unacked = self._unacked
                *full, last = runs_within([unacked[i] for i in ids if i in unacked], self._budget, _result_cost)
                for part in full:  # all but the last run alone; the last goes with the credit
                    await call.write(pb.LeaseRequest(results=part))
                req = pb.LeaseRequest(results=last)
                if self._draining and not self._drain_sent:
                    req.draining = self._drain_sent = True
                elif not self._draining:
                    req.credit = max(0, self.capacity - len(self._running) - self._outstanding)
                    self._outstanding += req.credit
                if req.results or req.credit or req.draining:
                    await call.write(req)
        except asyncio.CancelledError:
            raise
        except (grpc.RpcError, asyncio.InvalidStateError) as e:  # the stream ended under the write: the reader sees why
            log.debug("lease stream write ended: %r", e)
        except Exception:  # a bug here must not leave a stream that reads but never writes
            log.exception("dispatcher %s: lease stream writer failed; reopening the stream", self.dispatcher_id)
            call.cancel()

    def _on_response(self, resp: pb.LeaseResponse) -> None:
        for lease_id in resp.acked_lease_ids:
            self._unacked.pop(lease_id, None)
        for lease_id in resp.revoked_lease_ids:
            task = self._running.get(lease_id)
            if task is not None:
                log.info("lease %s revoked: the notify was cancelled", lease_id)
                task.cancel()
        revoked = set(resp.revoked_lease_ids)
        for grant in resp.grants:
            self._outstanding = max(0, self._outstanding - 1)
            if grant.lease_id in revoked:
                self._wake.set()  # cancelled before it arrived: never start it; its credit goes back
                continue
            if grant.lease_id in self._running or grant.lease_id in self._unacked:
                continue
            task = asyncio.create_task(self._deliver(grant))
            self._running[grant.lease_id] = task
        if resp.drain and self._drain_sent:
            self._drain_confirmed.set()  # every grant for this stream has arrived
        elif resp.drain and not self._draining:
            log.info("scheduler asked dispatcher %s to drain", self.dispatcher_id)
            self._draining = True
            self._wake.set()

    async def _take_turn(self) -> None:
        """Waits for a loop turn in which fewer than STARTS_PER_TURN calls have begun.

        Calls beyond that wait in line; each turn wakes only the next STARTS_PER_TURN of them."""
        if self._starts_left > 0 and not self._turn_line:
            self._starts_left -= 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._turn_line.append(waiter)
            await waiter  # its start was taken for it when it was woken
        if not self._starts_reset:
            self._starts_reset = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._starts_left, self._starts_reset = STARTS_PER_TURN, False
        line = self._turn_line
        while line and self._starts_left > 0:
            waiter = line.popleft()
            if not waiter.done():  # a cancelled (revoked) call gives its place up
                waiter.set_result(None)
                self._starts_left -= 1
        if line and not self._starts_reset:
            self._starts_reset = True
            asyncio.get_running_loop().call_soon(self._next_turn)

    async def _deliver(self, grant: pb.LeaseGrant) -> None:
        try:
            try:
                await self._take_turn()
                call = outgoing_call(grant)
                outcome = await self._sender.send(call)
            except asyncio.CancelledError:
                return  # revoked or stopping: the scheduler decides what happens next
            except Exception as e:  # a bug here must not lose the lease silently
                log.exception("notify %s attempt %d: dispatcher error", grant.notify.id, grant.attempt)
                now = time.time()
                outcome = CallOutcome(0, False, f"dispatcher error: {e!r}", ErrorKind.PROTOCOL, now, now, b"", None)
            if log.isEnabledFor(logging.INFO):  # the line's fields cost more than a filtered call
                self._log_outcome(grant, outcome)
            self._unacked[grant.lease_id] = lease_result(grant, outcome, self.dispatcher_id)
            self._unsent.append(grant.lease_id)
            self.calls_done += 1
        finally:
            self._running.pop(grant.lease_id, None)
            self._wake.set()

    def _log_outcome(self, grant: pb.LeaseGrant, outcome: CallOutcome) -> None:
        latency_ms = round(outcome.latency * 1000, 1)
        log.info("notify %s attempt %d: %s %s in %.0f ms", grant.notify.id, grant.attempt,
                 outcome.status_code or "-", "ok" if outcome.success else outcome.error, latency_ms,
                 extra={"notify_id": grant.notify.id, "attempt": grant.attempt, "status_code": outcome.status_code,
                        "latency_ms": latency_ms, "dispatcher_id": self.dispatcher_id, "lease_id": grant.lease_id})  # fmt: skip


def _result_cost(r: pb.LeaseResult) -> int:
    """A result's bytes in a LeaseRequest: the field's tag and length with it. One alone may exceed
    the budget (the scheduler bounds what a result carries); runs keep many unacked results from
    making one message over NOTIFY_MAX_MESSAGE_BYTES that the stream would refuse on every reconnect."""
    return r.ByteSize() + 8
