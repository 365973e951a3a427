"""The completer: the buffer of outcomes (handler starts, completions, failures) and its flush.

Outcomes wait here for the next statement the worker sends anyway: a busy worker writes them with its next
claim, in one statement (`flush_and_claim`); a quiet one writes them within ack_delay (`flush`). An outcome is
forgotten only once it is written. One the database refuses costs only its own job: the batch is then written
one by one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import psycopg.errors

from pgqueue.store import statements
from pgqueue.store.rows import Attempt, ClaimedJob
from pgqueue.store.run import count_async, fetch_async, send_async
from pgqueue.store.schema import JobStatus
from pgqueue.store.statements import Failure, Snoozed
from pgqueue.text import clip, first_line
from pgqueue.worker.connection import MainConnection

log = logging.getLogger("pgqueue.worker")

# Errors that say "try the same statement again", not "this data cannot be written".
TRANSIENT_ERRORS = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

# An idle claim is sent as claim_unlimited (one function call, the shorter pick-up) until it answers that a limit
# exists; then as the full claim, which decides limits, for this long before claim_unlimited is tried again. A worker
# beside limits pays one round trip more per period; one without any never pays it.
LIMITS_LOOK_AGAIN = 60.0  # seconds


@dataclass
class Outcomes:
    """Outcomes (and handler starts) waiting for the next batched write."""

    # Handlers started and still running, with when they started (monotonic): written within ack_delay, so
    # that a rescue can tell a job cut short from one that never started. A job that finishes first drops out
    # (its completion or failure records the start). Only the starts of handlers actually entered are written
    # (Completer.entered); the others wait for the next write.
    started: dict[Attempt, float] = field(default_factory=dict)
    completed: list[tuple[int, int, str | None]] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    snoozed: list[Snoozed] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.started) + len(self.completed) + len(self.failed) + len(self.snoozed)

    def ids(self) -> list[int]:
        return (
            [job_id for job_id, _ in self.started]
            + [row[0] for row in self.completed]
            + [f.id for f in self.failed]
            + [s.id for s in self.snoozed]
        )

    def oldest_start(self) -> float | None:
        return next(iter(self.started.values()), None)

    def absorb(self, newer: Outcomes) -> None:
        """Add what was buffered meanwhile (kept for the next write, after these)."""
        self.started.update(newer.started)
        self.completed.extend(newer.completed)
        self.failed.extend(newer.failed)
        self.snoozed.extend(newer.snoozed)


class Completer:
    """Writes outcomes for one worker, through its main connection.

    `on_lost(exc)` is awaited when the connection fails mid-write (it reconnects); `on_retry_due(run_at)` is told
    when a failed job will be due again (epoch seconds), so the claim loop wakes for it.
    """

    def __init__(
        self,
        connection: MainConnection,
        *,
        worker_id: str,
        lease: float,
        queues: list[str] | None,
        on_lost: Callable[[BaseException], Awaitable[None]],
        on_retry_due: Callable[[float], None],
    ) -> None:
        self._connection = connection
        self._worker_id = worker_id
        self._lease = timedelta(seconds=lease)
        self._queues = queues
        self._on_lost = on_lost
        self._on_retry_due = on_retry_due
        self.pending = Outcomes()
        # The attempts handed to their handler that has not been entered yet: a job taken by a kill -9 now must
        # go back uncharged, so its start is not written yet. Removed from by handler threads (`entered`): a
        # set's discard and a membership test are atomic, and the loop never iterates it. (A set of those not
        # entered, not of those entered: a start put back after a failed write may belong to an attempt that
        # has ended since, and must not wait for an entry that will never come.)
        self._not_entered: set[Attempt] = set()
        self._limits_seen_at: float | None = None  # when claim_unlimited last answered that a limit exists
        self.stats = {"completed": 0, "failed": 0, "retried": 0, "snoozed": 0}

    def __len__(self) -> int:
        return len(self.pending)

    # -- buffering --------------------------------------------------------------------------------------

    def started(self, key: Attempt, at: float) -> None:
        """The attempt is handed to its handler (written once the handler is entered)."""
        self._not_entered.add(key)
        self.pending.started[key] = at

    def entered(self, key: Attempt) -> None:
        """The attempt's handler is being called now (from its thread, for a sync handler)."""
        self._not_entered.discard(key)

    def forget_start(self, key: Attempt) -> None:
        """The attempt's start need not be written (it ended, and its outcome records it; or it was stopped)."""
        self.pending.started.pop(key, None)
        self._not_entered.discard(key)

    def completed(self, job_id: int, attempt: int, result_json: str | None) -> None:
        self.pending.completed.append((job_id, attempt, result_json))

    def failed(self, failure: Failure) -> None:
        self.pending.failed.append(failure)

    def snoozed(self, snoozed: Snoozed) -> None:
        self.pending.snoozed.append(snoozed)

    # -- writing ----------------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write what is buffered (nothing to do when nothing is)."""
        if self.pending:
            await self._write(None)

    async def flush_and_claim(self, limit: int, free: int | None = None) -> list[ClaimedJob] | None:
        """Write what is buffered and claim up to `limit` jobs, in one round trip; `free` of them (default: all)
        have a slot to start in at once (the others would be claimed ahead: rate-limited jobs are not).

        None when nothing could be claimed: the database was unreachable (reconnected by then), or an outcome it
        refused was written on its own."""
        return await self._write(limit, limit if free is None else free)

    async def _write(self, limit: int | None, free: int = 0) -> list[ClaimedJob] | None:
        """`limit` None: write only (returns [])."""
        try:
            async with self._connection.round_trip() as conn:
                outcomes, self.pending = self.pending, Outcomes()
                self._hold_back_unentered(outcomes)
                if limit is None and not outcomes:
                    return []
                try:
                    if limit is not None and not outcomes.failed and not outcomes.snoozed:
                        # The common case: starts, acks (if any) and the claim as one statement. It costs a
                        # busy worker less than a pipeline of two (measured: about 15% more jobs/s in a drain).
                        claimed = await self._claim_rows(conn, limit, free, outcomes)
                        self.stats["completed"] += len(outcomes.completed)
                        return claimed
                    async with conn.pipeline():
                        await self._write_outcomes(conn, outcomes)
                        sent = (
                            await send_async(conn, self._claim(limit, free, Outcomes())) if limit is not None else None
                        )
                    # Counted once the pipeline is through: a statement of it that fails fails them all, and they
                    # are written again (one by one).
                    self.stats["completed"] += len(outcomes.completed)
                    return await sent.rows() if sent is not None else []
                except BaseException:
                    outcomes.absorb(self.pending)  # kept for the next attempt
                    self.pending = outcomes
                    raise
        except psycopg.OperationalError as exc:
            await self._on_lost(exc)
            return None
        except TRANSIENT_ERRORS as exc:
            log.info("writing outcomes: %s; trying again", first_line(exc))
            return None
        except psycopg.Error as exc:
            if not self.pending:
                raise  # the claim itself fails, not an outcome: nothing to retry it with
            # Nothing of the statement was written. One outcome the database refuses (a value too big for it,
            # say) must cost only its own job: write them one by one, failing the ones refused.
            log.warning("writing outcomes failed (%s); writing them one by one", first_line(exc))
            await self._write_one_by_one()
            return None

    def _hold_back_unentered(self, outcomes: Outcomes) -> None:
        """Keep the starts of handlers not yet entered for a later write, due again after ack_delay (now)."""
        waiting = [key for key in outcomes.started if key in self._not_entered]
        if waiting:
            now = time.monotonic()
            for key in waiting:
                del outcomes.started[key]
                self.pending.started[key] = now

    async def _claim_rows(
        self, conn: psycopg.AsyncConnection[Any], limit: int, free: int, outcomes: Outcomes
    ) -> list[ClaimedJob]:
        """The claim (with `outcomes`) as one statement: for an idle worker while no limit exists, claim_unlimited."""
        if not outcomes and self._unlimited_worth_trying():
            query = statements.claim_unlimited(
                worker_id=self._worker_id, limit=limit, lease=self._lease, queues=self._queues
            )
            unlimited = await fetch_async(conn, query)
            if unlimited != [None]:
                return [job for job in unlimited if job is not None]  # all of them: None comes alone
            self._limits_seen_at = time.monotonic()  # a limit exists: nothing was claimed
        return await fetch_async(conn, self._claim(limit, free, outcomes))

    def _unlimited_worth_trying(self) -> bool:
        seen = self._limits_seen_at
        return seen is None or time.monotonic() - seen >= LIMITS_LOOK_AGAIN

    def _claim(self, limit: int, free: int, outcomes: Outcomes) -> statements.Query[ClaimedJob]:
        return statements.record_outcomes_and_claim(
            worker_id=self._worker_id,
            limit=limit,
            free=free,
            lease=self._lease,
            queues=self._queues,
            started=outcomes.started,
            completed=outcomes.completed,
        )

    async def _write_outcomes(self, conn: psycopg.AsyncConnection[Any], outcomes: Outcomes) -> None:
        if outcomes.started or outcomes.completed:
            command = statements.record_outcomes(
                worker_id=self._worker_id, started=outcomes.started, completed=outcomes.completed
            )
            await count_async(conn, command)
        if outcomes.failed:
            written = await fetch_async(conn, statements.fail_jobs(worker_id=self._worker_id, failures=outcomes.failed))
            for failed in written:
                if failed.status == JobStatus.PENDING:
                    self.stats["retried"] += 1
                    self._on_retry_due(float(failed.run_at))
                else:
                    self.stats["failed"] += 1
        if outcomes.snoozed:
            query = statements.snooze_jobs(worker_id=self._worker_id, snoozed=outcomes.snoozed)
            for snoozed in await fetch_async(conn, query):
                self.stats["snoozed"] += 1
                self._on_retry_due(float(snoozed.run_at))

    async def _write_one_by_one(self) -> None:
        outcomes, self.pending = self.pending, Outcomes()
        self._hold_back_unentered(outcomes)
        singles = [Outcomes(started=dict(outcomes.started))] if outcomes.started else []
        singles += [Outcomes(completed=[done]) for done in outcomes.completed]
        singles += [Outcomes(failed=[failed]) for failed in outcomes.failed]
        singles += [Outcomes(snoozed=[snoozed]) for snoozed in outcomes.snoozed]
        for single in singles:
            try:
                async with self._connection.round_trip() as conn:
                    await self._write_outcomes(conn, single)
                self.stats["completed"] += len(single.completed)
            except psycopg.OperationalError:
                single.absorb(self.pending)  # written with the next flush, after the reconnect
                self.pending = single
            except psycopg.Error as exc:
                refused = _refused(single, f"outcome could not be stored: {first_line(exc)}")
                if refused is None:
                    log.error("could not record job starts (%s)", first_line(exc))
                    continue
                log.warning("job %d attempt %d: %s", refused.id, refused.attempt, refused.error)
                try:
                    async with self._connection.round_trip() as conn:
                        await self._write_outcomes(conn, Outcomes(failed=[refused]))
                except psycopg.Error as again:
                    log.error("job %d: could not record its failure either (%s)", refused.id, first_line(again))


def _refused(single: Outcomes, error: str) -> Failure | None:
    """The one outcome in `single` the database refused, as a permanent failure of its job."""
    if single.completed:
        job_id, attempt, _value = single.completed[0]
        return Failure(job_id, attempt, False, timedelta(0), error, None)
    if single.failed:
        refused = single.failed[0]
        return Failure(refused.id, refused.attempt, False, timedelta(0), clip(error, 2000), None)
    if single.snoozed:
        snoozed = single.snoozed[0]
        return Failure(snoozed.id, snoozed.attempt, False, timedelta(0), clip(error, 2000), None)
    return None
