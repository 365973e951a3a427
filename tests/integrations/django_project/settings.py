"""Django settings made from a libpq DSN with `settings.configure()`: no settings module, no manage.py.

Databases: `default` (Django's defaults: psycopg 3, client-side binding), `server_binding` (the same database with
server-side binding, the mode in which `prepare_threshold` matters) and `sqlite` (a non-PostgreSQL backend, which
pgqueue must refuse).
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings
from psycopg.conninfo import conninfo_to_dict

from pgqueue.settings import normalize_dsn

POSTGRES_ALIASES = ("default", "server_binding")


def database_settings(dsn: str, **options: Any) -> dict[str, Any]:
    """A DATABASES entry for the database of `dsn` (host, port, user, password, name; the rest as OPTIONS)."""
    info = {key: str(value) for key, value in conninfo_to_dict(normalize_dsn(dsn)).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": info.pop("dbname", "postgres"),
        "USER": info.pop("user", ""),
        "PASSWORD": info.pop("password", ""),
        "HOST": info.pop("host", ""),
        "PORT": info.pop("port", ""),
        "OPTIONS": {**info, **options},
    }


def configure(dsn: str) -> None:
    """Configure Django once per process and load the app."""
    if settings.configured:
        return
    settings.configure(
        DEBUG=False,
        USE_TZ=True,
        TIME_ZONE="UTC",
        INSTALLED_APPS=["tests.integrations.django_project.orders"],
        DATABASES={
            "default": database_settings(dsn),
            "server_binding": database_settings(dsn, server_side_binding=True),
            "sqlite": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def point_at(dsn: str) -> None:
    """Point the PostgreSQL aliases at another database (each test has its own), as Django's test runner does."""
    from django.db import connections

    for alias in POSTGRES_ALIASES:
        connections[alias].close()
        options = {"server_side_binding": True} if alias == "server_binding" else {}
        connections.settings[alias].update(database_settings(dsn, **options))
