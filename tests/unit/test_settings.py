"""Each setting is defined once: WorkerSettings' checks, `pgqueue work`'s options and a supervised child's command
line all come from the definition."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from pgqueue.cli import app
from pgqueue.settings import WorkerSettings, worker_settings

WORK = typer.main.get_command(app).commands["work"]  # type: ignore[attr-defined]


def test_every_worker_setting_has_a_flag_an_env_var_and_help() -> None:
    options = {param.name: param for param in WORK.params}
    for definition in worker_settings():
        option = options[definition.name]
        assert definition.flag in option.opts
        assert option.envvar == definition.env
        assert definition.help and option.help == definition.help
    assert {d.name for d in worker_settings()} == {f.name for f in dataclasses.fields(WorkerSettings)}


def test_help_shows_every_flag_with_its_default() -> None:
    result = CliRunner().invoke(app, ["work", "--help"], env={"COLUMNS": "200"}, terminal_width=200)
    assert result.exit_code == 0
    for definition in worker_settings():
        assert definition.flag in result.output
    for shown in ("default: 16", "default: 30.0", "default: (7d)", "default: 0.02", "PGQUEUE_RETENTION"):
        assert shown in result.output, shown


def parse_work(args: list[str]) -> dict[str, Any]:
    context = WORK.make_context("work", ["--app", "x", *args])
    return {
        name: value for name, value in context.params.items() if name not in ("app_spec", "dsn", "workers", "verbose")
    }


def test_the_cli_sets_retention_prefetch_and_ack_delay() -> None:
    given = parse_work(["--retention", "1d12h", "--prefetch", "3", "--ack-delay", "0.05", "-q", "a", "-q", "b"])
    settings = WorkerSettings(**given)
    assert settings.retention == timedelta(days=1, hours=12)
    assert (settings.prefetch, settings.ack_delay, settings.queues) == (3, 0.05, ["a", "b"])


def test_env_vars_set_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_LEASE", "7")
    monkeypatch.setenv("PGQUEUE_RETENTION", "2h")
    settings = WorkerSettings(**parse_work([]))
    assert (settings.lease, settings.retention) == (7.0, timedelta(hours=2))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lease", "2"], "greater than or equal to 3"),
        (["--poll-interval", "0"], "poll_interval must be greater than 0"),
        (["--retention", "soon"], "invalid duration"),
        (["--concurrency", "0"], "greater than or equal to 1"),
    ],
)
def test_bounds_come_from_the_definition(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["work", "--app", "x", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_the_same_bounds_hold_in_python() -> None:
    with pytest.raises(ValueError, match="lease must be at least 3"):
        WorkerSettings(lease=2)
    with pytest.raises(ValueError, match="poll_interval must be greater than 0"):
        WorkerSettings(poll_interval=0)
    with pytest.raises(ValueError, match="prefetch must be at least 0"):
        WorkerSettings(prefetch=-1)


def test_a_child_command_line_gives_back_the_same_settings() -> None:
    settings = WorkerSettings(
        queues=["emails", "reports"],
        concurrency=5,
        burst=True,
        poll_interval=0.5,
        lease=7,
        grace_period=2,
        maintenance_interval=1.5,
        retention=timedelta(hours=36),
        ack_delay=0.05,
        prefetch=3,
        reconnect_max_delay=2,
        listen_dsn="postgresql://u:secret@h/d",
    )
    line = settings.command_line()
    assert "secret" not in " ".join(line)  # a password reaches the child by environment only
    assert settings.environment() == {"PGQUEUE_LISTEN_DSN": "postgresql://u:secret@h/d"}
    again = WorkerSettings(**{**parse_work(line), "listen_dsn": settings.listen_dsn})
    assert again == settings


def test_defaults_are_left_off_a_child_command_line() -> None:
    assert WorkerSettings().command_line() == []
    assert WorkerSettings(lease=10).command_line() == ["--lease", "10"]


def test_observability_settings_round_trip_and_are_checked() -> None:
    settings = WorkerSettings(metrics_port=9464, metrics_interval=5, tracing=True, log_format="json")
    parsed = parse_work(settings.command_line())
    assert [parsed[name] for name in ("metrics_port", "metrics_interval", "tracing", "log_format")] == [
        9464,
        5.0,
        True,
        "json",
    ]
    with pytest.raises(ValueError, match="metrics_port must be at most 65535"):
        WorkerSettings(metrics_port=65536)
    with pytest.raises(ValueError, match="metrics_port must be at least 1"):
        WorkerSettings(metrics_port=0)
    with pytest.raises(ValueError, match="log_format must be one of text, json"):
        WorkerSettings(log_format="JSON")
    for args in (["--metrics-port", "65536"], ["--log-format", "yaml"], ["--metrics-interval", "0"]):
        result = CliRunner().invoke(app, ["work", "--app", "x", *args])
        assert result.exit_code == 2, (args, result.output)
