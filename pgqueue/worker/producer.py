"""The claim loop: when to claim and how many (free slots plus jobs claimed ahead), the jobs claimed ahead,
when the next job is due, and when a burst worker is done. Everything it learns comes in as a call: a
notification (`on_jobs`), a freed slot (`on_slot_free`), a retry's due time (`note_due`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import psycopg

from pgqueue.settings import WorkerSettings
from pgqueue.store import statements
from pgqueue.store.rows import Attempt, ClaimedJob
from pgqueue.text import shown
from pgqueue.worker.completer import Completer
from pgqueue.worker.connection import MainConnection
from pgqueue.worker.rules import idle_timeout, prefetch_room, starts_due_in
from pgqueue.worker.slots import Slots
from pgqueue.worker.stopping import Stopping

log = logging.getLogger("pgqueue.worker")


class Producer:
    """`on_lost(exc)` is awaited when the connection fails (it reconnects); `rescue()` rescues lost jobs now and
    returns how many became runnable (a burst worker's last look)."""

    def __init__(
        self,
        settings: WorkerSettings,
        slots: Slots,
        completer: Completer,
        connection: MainConnection,
        stopping: Stopping,
        *,
        on_lost: Callable[[BaseException], Awaitable[None]],
        rescue: Callable[[], Awaitable[int]],
    ) -> None:
        self._settings = settings
        self._slots = slots
        self._completer = completer
        self._connection = connection
        self._stopping = stopping
        self._on_lost = on_lost
        self._rescue = rescue
        self.prefetched: collections.deque[ClaimedJob] = collections.deque()  # claimed, waiting for a slot
        self._wake = asyncio.Event()
        self._claim_wanted = True  # there may be runnable jobs: claim when a slot is free
        self._next_due: float | None = None  # epoch of the earliest known future job
        self._due_unknown = True  # _next_due may have missed jobs (start, poll, LISTEN reconnect, a due time)
        self._next_poll = 0.0
        self._burst_rescued = False  # a burst worker rescues once before it decides it is done
        self._burst_written = 0  # outcomes written when a burst worker last found nothing to claim
        self._parked_held = False  # a claim of ours parked held jobs since maintenance last looked
        # Claim again as soon as one of our slots frees: a claim left limited jobs unclaimed for want of a free slot
        # here (no_slot), or met a concurrency limit (the slots our completions free go to held jobs only in the
        # claim that writes those completions, so writing them alone would leave the slots idle).
        self._claim_when_free = False
        # Claim only for free slots while the jobs next in line are rate-limited (a start is counted only for a
        # handler about to run, so a claim for more would lock rows only to leave them) or under a concurrency
        # limit that a claim found full (the same: each job claimed ahead of a full limit is left pending). Jobs
        # under a limit with slots to spare are claimed ahead like any other, each taking a slot (migration 0016).
        self._no_claim_ahead = False
        # Queues of the jobs our claims took a concurrency slot for. Such a claim leaves the jobs of that limit it
        # cannot start pending (migration 0023) for our next claim; a worker that stops tells these queues instead.
        self.slot_queues: set[str] = set()

    def take_parked_held(self) -> bool:
        """Whether a claim of ours parked held jobs since the last call (maintenance's cue to look at them)."""
        parked, self._parked_held = self._parked_held, False
        return parked

    # -- what it is told ----------------------------------------------------------------------------------

    def wake(self, *, claim: bool = True) -> None:
        if claim:
            self._claim_wanted = True
        self._wake.set()

    def claim_soon(self) -> None:
        """Claim at the loop's next turn (after a reconnect: what happened meanwhile is unknown)."""
        self._claim_wanted = True

    def on_jobs(self, queue_name: str, run_at: float) -> None:
        """Jobs of `queue_name` were inserted, the earliest due at `run_at` (a notification: only a hint)."""
        queues = self._settings.queues
        if queues and queue_name not in queues:
            return
        if run_at <= time.time() + 0.001:
            self.wake()
        else:
            self.note_due(run_at)
            self.wake(claim=False)

    def on_listening(self) -> None:
        """LISTEN (re)started: catch up with anything inserted while nobody was listening."""
        self._due_unknown = True
        self.wake()

    def on_slot_free(self) -> None:
        """The free slot goes to a claimed job at once, without a round trip; then claim more or flush."""
        if self._claim_when_free:
            self._claim_when_free = False
            self._claim_wanted = True
        self.start_prefetched()
        self._wake.set()

    def note_due(self, run_at: float) -> None:
        if self._next_due is None or run_at < self._next_due:
            self._next_due = run_at

    def held(self) -> list[Attempt]:
        """The attempts claimed ahead (called from the lease thread: list() copies the deque in one step)."""
        return [claimed.key for claimed in list(self.prefetched)]

    # -- the loop -----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Claim and start jobs until a stop is requested (or, with burst, nothing is runnable now)."""
        self._burst_rescued = False
        while not self._stopping.requested:
            await asyncio.sleep(0)  # let jobs that finish together free their slots together
            self._look_again_when_due(time.time())
            if self._settings.burst and not self._slots.running and not self._completer:
                self._claim_wanted = True  # one more claim decides whether we are done
            self.start_prefetched()
            free = self._slots.free
            room = free + self._prefetch_room()
            if self._claim_wanted and room > 0:
                if await self._claim(room):
                    return  # a burst worker with nothing left to run
            else:
                await self._wait(free)

    def _look_again_when_due(self, now: float) -> None:
        if self._next_due is not None and self._next_due <= now:
            # Look again once this one is claimed: later due times may have been forgotten meanwhile
            # (only the earliest is kept), and the table knows them all.
            self._next_due = None
            self._claim_wanted = self._due_unknown = True
        if now >= self._next_poll:
            self._claim_wanted = self._due_unknown = True

    async def _claim(self, room: int) -> bool:
        """Claim up to `room` jobs (with the buffered outcomes) and start what fits; True when a burst is done."""
        # Cleared before the claim, not after: a job notified while the claim is on its way may have
        # committed after the claim's snapshot, and its wake-up must not be lost (it would wait for
        # the next notification or the poll).
        self._claim_wanted = False
        # Outcomes written with this claim may free limit slots, and so wake held jobs after the claim's snapshot.
        wrote_outcomes = bool(self._completer)
        claimed = await self._completer.flush_and_claim(room, self._slots.free)
        if claimed is None:  # database unreachable (retried after the reconnect delay) or a bad outcome
            self._claim_wanted = True
            return False
        self._next_poll = time.time() + self._settings.poll_interval
        # Jobs a limit held back (parked by a concurrency limit, moved on by a rate) count towards a full batch
        # (there may be unlimited jobs behind them) but are not ours to run.
        self.prefetched.extend(job for job in claimed if not job.held)
        no_slot = rated = slotted = parked = False
        for job in claimed:  # one pass over the batch: what the limits said of each job
            rated = rated or job.rated
            slotted = slotted or job.slotted
            if job.slotted and not job.held and job.queue is not None:
                self.slot_queues.add(job.queue)
            if job.no_slot:
                no_slot = True
            elif job.due_at is not None:
                self.note_due(job.due_at)  # a rate's next start: this worker looks again then
            elif job.held:
                self._parked_held = parked = True
        # A parked job (held, with no due time) was held for a concurrency slot: that limit is full.
        self._no_claim_ahead = rated or no_slot or parked
        self.start_prefetched()
        if no_slot:
            # Limited jobs wait for a free slot here, not in memory: the next claim when a slot frees. (Claiming
            # again now would find them again, and again.)
            self._claim_when_free = True
            return False
        if len(claimed) >= room:
            self._claim_wanted = True  # a full batch: there may be more
            return False
        if slotted:
            # Jobs held for a concurrency slot are not pending, so a short batch does not mean that nothing waits:
            # the slots this worker's completions free go to held jobs in the claim that writes those completions
            # (and only there). So claim, rather than only write them, as soon as a slot frees.
            if self._completer.pending.completed and self._slots.free:
                self._claim_wanted = True  # some finished while this claim was on its way
            else:
                self._claim_when_free = True
        if self._due_unknown:
            # Only now and then: notifications and our own retries keep _next_due current.
            self._due_unknown = False
            await self._refresh_next_due()
        if not self._settings.burst or any(not job.held for job in claimed) or self._slots.running or self.prefetched:
            return False
        if wrote_outcomes:
            self._claim_wanted = True  # a burst worker looks once more at what its last outcomes made runnable
            return False
        await self._completer.flush()
        if self._next_due is not None and self._next_due <= time.time():
            # That flush wrote a retry or a snooze that is due already (a handler that ended while the claim
            # was on its way): it is runnable now, so a burst worker is not done.
            self._claim_wanted = True
            return False
        # Outcomes written since the last look may have released dependents (workflows: the trigger of migration
        # 0010 releases them in the completing statement, after that statement's claim has looked): look again.
        written = sum(self._completer.stats.values())
        if written != self._burst_written:
            self._burst_written = written
            self._claim_wanted = True
            return False
        # Jobs of a vanished worker are runnable once rescued: a deployment that runs only burst workers must
        # not leave them stuck.
        if not self._burst_rescued and await self._rescue_for_burst():
            self._burst_rescued = True
            self._claim_wanted = True
            return False
        return True

    async def _wait(self, free: int) -> None:
        """Nothing to claim now: write outcomes within ack_delay, else sleep until woken, a poll or a due job."""
        ack_delay = self._settings.ack_delay
        oldest_start = self._completer.pending.oldest_start()
        start_due = oldest_start is not None and time.monotonic() - oldest_start >= ack_delay
        if start_due or (self._completer and (not self._slots.running or free > 0)):
            # Outcomes wait at most ack_delay so a quiet queue still records completions promptly; so do
            # the starts of handlers that are still running, which a rescue reads.
            await self.sleep_until_woken(0 if start_due else ack_delay)
            if start_due or not self._claim_wanted or free == 0:
                await self._completer.flush()
            return
        timeout = idle_timeout(now=time.time(), next_poll=self._next_poll, next_due=self._next_due)
        start_in = starts_due_in(oldest_start=oldest_start, now=time.monotonic(), ack_delay=ack_delay)
        await self.sleep_until_woken(timeout if start_in is None else min(timeout, start_in))

    async def sleep_until_woken(self, timeout: float) -> None:
        if timeout > 0 and not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def start_prefetched(self) -> None:
        slots = self._slots
        while self.prefetched and len(slots.running) < slots.concurrency and not self._stopping.requested:
            slots.start(self.prefetched.popleft())

    def _prefetch_room(self) -> int:
        if self._no_claim_ahead:
            return 0
        return prefetch_room(
            job_seconds=self._slots.job_seconds,
            concurrency=self._settings.concurrency,
            prefetch=self._settings.prefetch or 0,
            prefetched=len(self.prefetched),
        )

    async def _refresh_next_due(self) -> None:
        try:
            found = await self._connection.fetch(statements.next_run_at(self._settings.queues))
        except psycopg.OperationalError as exc:
            await self._on_lost(exc)
            return
        run_at = found[0].run_at if found else None
        self._next_due = None
        if run_at is not None:
            self.note_due(float(run_at))

    async def _rescue_for_burst(self) -> bool:
        """Rescue expired leases now; True when that made jobs runnable."""
        try:
            return await self._rescue() > 0
        except psycopg.OperationalError as exc:
            await self._on_lost(exc)
            return True  # could not tell: claim once more

    # -- claimed ahead, no longer wanted -------------------------------------------------------------------

    def drop_prefetched(self, attempts: set[Attempt], reason: str) -> None:
        """Forget claimed jobs that have not started and are no longer ours: they must not run here."""
        dropped = [claimed for claimed in self.prefetched if claimed.key in attempts]
        if not dropped:
            return
        self.prefetched = collections.deque(claimed for claimed in self.prefetched if claimed.key not in attempts)
        for claimed in dropped:
            log.info(
                "job %d %s attempt %d dropped before it started: %s",
                claimed.id,
                shown(claimed.task),
                claimed.attempt,
                reason,
            )

    def take_prefetched(self) -> list[ClaimedJob]:
        """All jobs claimed ahead, to hand back (a stopping worker)."""
        taken = list(self.prefetched)
        self.prefetched.clear()
        return taken
