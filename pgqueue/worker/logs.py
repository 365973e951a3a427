"""Job events as log records (with `--log-format json`): one record per event on logger `pgqueue.events`, its
fields as attributes of the record (`record.job`), so a structured formatter writes them as fields."""

from __future__ import annotations

import logging

from pgqueue.worker.events import Event, JobEvent, Observer

log = logging.getLogger("pgqueue.events")

# The level of each event: what goes wrong is a warning, a retry is routine.
_LEVELS = {Event.FAILED: logging.WARNING, Event.RESCUED: logging.WARNING}


class EventLog(Observer):
    def job_event(self, event: JobEvent) -> None:
        level = _LEVELS.get(event.event, logging.INFO)
        if not log.isEnabledFor(level):
            return
        fields = {
            "event": event.event.value,
            "job_id": event.id,
            "task": event.task,
            "queue": event.queue,
            "attempt": event.attempt,
            "worker": event.worker,
        }
        if event.duration is not None:
            fields["duration"] = round(event.duration, 6)
        if event.waited is not None:
            fields["waited"] = round(event.waited, 6)
        if event.error is not None:
            fields["error"] = event.error
        if event.status is not None:
            fields["status"] = event.status
        # The message repeats the essentials for a reader of the text; the fields are what a machine reads.
        log.log(level, "job %d %s", event.id, event.event.value, extra={"job": fields})
