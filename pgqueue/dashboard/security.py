"""The dashboard's guards, pure and framework-free: HTTP Basic credentials, CSRF tokens, the bind rule, headers.

- Basic auth compares the whole `user:password` in constant time (hmac.compare_digest), after hashing both
  sides so that the comparison's length does not depend on the guess either.
- CSRF: a signed double-submit token. A random value lives in a cookie (HttpOnly, SameSite=Strict, path = the
  app's mount point); each form carries HMAC(secret, that value). A forged cross-site POST has neither the
  cookie's value nor the secret. The secret is per process unless given (`secret=` or PGQUEUE_DASHBOARD_SECRET):
  give one when several processes serve the same dashboard.
- Bind rule: without authentication the dashboard listens on loopback addresses only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets

CSRF_COOKIE = "pgqueue_csrf"
CSRF_FIELD = "csrf"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class UsageError(ValueError):
    """A setting the dashboard refuses to start with (the CLI exits 2 with its message)."""


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """`user:password` -> (user, password); None stays None. Both parts must be non-empty."""
    if text is None or text == "":
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise UsageError("--auth must be USER:PASSWORD with both parts non-empty")
    return user, password


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: tuple[str, str] | None) -> None:
    if not is_loopback(host) and auth is None:
        raise UsageError(
            f"refusing to listen on {host} without authentication: pass --auth USER:PASSWORD "
            "(or set PGQUEUE_DASHBOARD_AUTH), or bind to 127.0.0.1"
        )


class BasicAuth:
    def __init__(self, user: str, password: str) -> None:
        self._expected = hashlib.sha256(f"{user}:{password}".encode()).digest()

    def allows(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or len(encoded) > 4096:
            return False
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(hashlib.sha256(given).digest(), self._expected)


class CsrfTokens:
    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(24)

    def token_for(self, cookie_value: str) -> str:
        digest = hmac.new(self._secret, cookie_value.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def valid(self, cookie_value: str | None, token: str | None) -> bool:
        if not cookie_value or not token or len(cookie_value) > 200 or len(token) > 200:
            return False
        return hmac.compare_digest(self.token_for(cookie_value), token)
