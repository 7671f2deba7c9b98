"""Who may ask and how often: Digest challenges and answers, OAuth access tokens and
per-group rate-limit buckets."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from http import HTTPStatus
from urllib.parse import unquote_plus

from aiohttp import hdrs, web

REALM = "MMS Public API"
UNAUTHORIZED_BODY = {
    "error": 401,
    "reason": "Unauthorized",
    "detail": "You are not authorized for this resource.",
}
# Past this many outstanding challenges the oldest nonces are forgotten, so a flood of
# unauthenticated requests cannot grow memory without bound.
_NONCE_CAPACITY = 10_000
OAUTH_TOKEN_PATH = "/api/oauth/token"  # noqa: S105 - a path, not a password
# Past this many live access tokens the oldest are forgotten (as for nonces).
_TOKEN_CAPACITY = 10_000


@dataclass
class _TokenBucket:
    per_minute: int
    tokens: float
    updated_at: float

    def take(self, now: float) -> bool:
        refill = (now - self.updated_at) * self.per_minute / 60
        self.tokens = min(self.per_minute, self.tokens + refill)
        self.updated_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def seconds_until_token(self) -> int:
        return max(1, math.ceil((1 - self.tokens) * 60 / self.per_minute))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.per_minute),
            "RateLimit-Remaining": str(math.floor(self.tokens)),
        }


class _TokenRegistry:
    """Access tokens this simulator issued, with expiry times, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._expires_at: OrderedDict[str, float] = OrderedDict()

    def issue(self, now: float, lifetime: float) -> str:
        token = secrets.token_urlsafe(32)
        self._expires_at[token] = now + lifetime
        while len(self._expires_at) > self._capacity:
            self._expires_at.popitem(last=False)
        return token

    def is_valid(self, token: str, now: float) -> bool:
        expires_at = self._expires_at.get(token)
        if expires_at is None:
            return False
        if now >= expires_at:
            del self._expires_at[token]
            return False
        return True

    def __len__(self) -> int:
        return len(self._expires_at)


class _NonceRegistry:
    """Nonces this simulator issued, with issue times, oldest evicted first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._issued_at: OrderedDict[str, float] = OrderedDict()

    def issue(self, now: float) -> str:
        nonce = secrets.token_hex(16)
        self._issued_at[nonce] = now
        while len(self._issued_at) > self._capacity:
            self._issued_at.popitem(last=False)
        return nonce

    def issued_at(self, nonce: str) -> float | None:
        return self._issued_at.get(nonce)


@dataclass(frozen=True)
class _DigestCredentials:
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    qop: str
    nc: str
    cnonce: str
    algorithm: str


_AUTH_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')
_REQUIRED_DIGEST_FIELDS = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")


def _parse_digest_authorization(header: str) -> _DigestCredentials | None:
    """None unless the header is a Digest answer carrying every field qop=auth requires."""
    scheme, _, params = header.partition(" ")
    if scheme.lower() != "digest":
        return None
    fields = {
        match[1].lower(): re.sub(r"\\(.)", r"\1", match[2]) if match[2] is not None else match[3]
        for match in _AUTH_PARAM.finditer(params)
    }
    if not all(name in fields for name in _REQUIRED_DIGEST_FIELDS):
        return None
    return _DigestCredentials(
        algorithm=fields.get("algorithm", "MD5"),  # RFC 7616: absent means MD5
        **{name: fields[name] for name in _REQUIRED_DIGEST_FIELDS},
    )


def _md5_hex(text: str) -> str:
    """Digest auth mandates MD5; surrogateescape keeps odd client bytes from raising."""
    data = text.encode("utf-8", "surrogateescape")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _digest_response(credentials: _DigestCredentials, *, method: str, password: str) -> str:
    """RFC 7616 response for algorithm MD5 and qop auth."""
    ha1 = _md5_hex(f"{credentials.username}:{credentials.realm}:{password}")
    ha2 = _md5_hex(f"{method}:{credentials.uri}")
    c = credentials
    return _md5_hex(f"{ha1}:{c.nonce}:{c.nc}:{c.cnonce}:{c.qop}:{ha2}")


def _digest_is_valid(
    credentials: _DigestCredentials,
    *,
    method: str,
    request_uri: str,
    username: str,
    password: str,
) -> bool:
    """Everything but the nonce, which only the simulator's registry can vouch for."""
    if (
        credentials.username != username
        or credentials.realm != REALM
        or credentials.algorithm.upper() != "MD5"
        or credentials.qop != "auth"
        or credentials.uri != request_uri
    ):
        return False
    expected = _digest_response(credentials, method=method, password=password)
    return hmac.compare_digest(
        expected.encode(), credentials.response.encode("utf-8", "surrogateescape")
    )


def _challenge_header(nonce: str, *, stale: bool) -> str:
    return (
        f'Digest realm="{REALM}", domain="", nonce="{nonce}", algorithm=MD5, qop="auth", '
        f"stale={str(stale).lower()}"
    )


class _AuthVerdict(Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    STALE = "stale"
    BEARER_REJECTED = "bearer_rejected"


@dataclass(frozen=True)
class _ServiceAccount:
    """The one service account the simulator knows (``client_id`` and ``client_secret``)."""

    client_id: str
    client_secret: str

    def is_client(self, authorization: str) -> bool:
        scheme, _, encoded = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        encoded_id, colon, encoded_secret = decoded.partition(":")
        client_id, client_secret = unquote_plus(encoded_id), unquote_plus(encoded_secret)
        # Both compared, always, so the answer time does not tell which one was wrong.
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self.client_secret.encode())
        return bool(colon) and id_ok and secret_ok


async def _answer_token_request(
    request: web.Request,
    account: _ServiceAccount | None,
    tokens: _TokenRegistry,
    clock: Callable[[], float],
    lifetime: int,
) -> web.Response:
    """OAuth 2 client credentials grant (RFC 6749 section 4.4) as Atlas serves it."""
    headers = {hdrs.CACHE_CONTROL: "no-store", hdrs.PRAGMA: "no-cache"}
    if account is None or not account.is_client(request.headers.get(hdrs.AUTHORIZATION, "")):
        body = {"error": "invalid_client", "error_description": "Invalid client credentials."}
        return web.json_response(body, status=HTTPStatus.UNAUTHORIZED, headers=headers)
    if request.content_type != "application/x-www-form-urlencoded":
        body = {
            "error": "invalid_request",
            "error_description": "The body must be application/x-www-form-urlencoded.",
        }
        return web.json_response(body, status=HTTPStatus.BAD_REQUEST, headers=headers)
    grant_type = (await request.post()).get("grant_type")
    if grant_type != "client_credentials":
        error = "invalid_request" if grant_type is None else "unsupported_grant_type"
        body = {"error": error, "error_description": "Only client_credentials is supported."}
        return web.json_response(body, status=HTTPStatus.BAD_REQUEST, headers=headers)
    token = tokens.issue(clock(), lifetime)
    granted = {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"}
    return web.json_response(granted, headers=headers)
