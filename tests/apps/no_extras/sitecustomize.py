"""Put on PYTHONPATH by tests/integration/test_metrics.py: the optional extras' libraries cannot be imported,
as in a base install of pgqueue."""

import sys
from importlib.abc import MetaPathFinder

BLOCKED = ("prometheus_client", "opentelemetry")


class _Blocker(MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked: a base install)", name=fullname)
        return None


sys.meta_path.insert(0, _Blocker())
