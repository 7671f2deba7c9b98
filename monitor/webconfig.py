"""The listener's TLS and basic authentication, from a Prometheus exporter-toolkit web
configuration file (``server.web_config_file``), so operators reuse the file, the bcrypt
hashes and the scrape settings they already have for their Go exporters.

Only what can be honoured safely is accepted: settings the toolkit itself calls insecure
(client certificates accepted unverified, TLS below 1.2, plain-text passwords, cheap
bcrypt costs) are errors naming the field, as are the toolkit keys this daemon does not
implement, so nobody believes they are protected by a line that is ignored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import enum
import hashlib
import hmac
import re
import secrets
import ssl
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated

import bcrypt
from aiohttp import hdrs, web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

MIN_BCRYPT_COST = 10
"""The toolkit's documented example and Go's bcrypt.DefaultCost; ``htpasswd -B`` alone
uses 5, which a GPU guesses through quickly."""
REALM = "atlas-endpoint-monitor"
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Probes carry no credentials (the kubelet's do not) and these answer nothing secret."""

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_WEAK_TLS_VERSIONS = {"TLS10", "TLS11"}

# The toolkit's cipher_suites take Go's names; these are the TLS 1.2 suites with forward
# secrecy and authenticated encryption, by their OpenSSL names. TLS 1.3 suites are not
# configurable (in Go neither).
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}


class ClientAuth(enum.StrEnum):
    """The toolkit's client_auth_type values (Go's tls.ClientAuthType names)."""

    NO_CLIENT_CERT = "NoClientCert"
    REQUEST_CLIENT_CERT = "RequestClientCert"
    REQUIRE_ANY_CLIENT_CERT = "RequireAnyClientCert"
    VERIFY_CLIENT_CERT_IF_GIVEN = "VerifyClientCertIfGiven"
    REQUIRE_AND_VERIFY_CLIENT_CERT = "RequireAndVerifyClientCert"


_VERIFY_MODES = {
    ClientAuth.NO_CLIENT_CERT: ssl.CERT_NONE,
    ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN: ssl.CERT_OPTIONAL,
    ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT: ssl.CERT_REQUIRED,
}
# Toolkit keys left out on purpose, and what to use instead.
_UNSUPPORTED = {
    "cert": "give the certificate as a file, cert_file",
    "key": "give the key as a file, key_file",
    "client_ca": "give the client CA as a file, client_ca_file",
    "client_allowed_sans": "issue the scrapers' client certificates from a CA of their own",
    "curve_preferences": "OpenSSL's defaults apply",
    "rate_limit": "limit scrapes in front of the daemon if you need to",
}
_BCRYPT_HASH = re.compile(r"\$2[aby]\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}")
_HEADERS = {
    "Content-Security-Policy": None,
    "X-Frame-Options": {"deny", "sameorigin"},
    "X-Content-Type-Options": {"nosniff"},
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
"""The response headers the toolkit lets a file set, with the values it accepts (None: any)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @staticmethod
    def _refuse(value: object, info: ValidationInfo) -> None:
        """For the toolkit keys in _UNSUPPORTED, so the error says what to do instead."""
        raise ValueError(f"not supported; {_UNSUPPORTED[str(info.field_name)]}")


def _tls_version(value: str) -> str:
    if value in _WEAK_TLS_VERSIONS:
        raise ValueError(f"{value} is too weak; use TLS12 or TLS13")
    if value not in TLS_VERSIONS:
        raise ValueError(f"must be TLS12 or TLS13, got {value!r}")
    return value


TLSVersionName = Annotated[str, AfterValidator(_tls_version)]


class TLSServerConfig(_Strict):
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    client_auth_type: ClientAuth = ClientAuth.NO_CLIENT_CERT
    min_version: TLSVersionName = "TLS12"
    max_version: TLSVersionName = "TLS13"
    cipher_suites: list[str] = Field(default_factory=list)
    prefer_server_cipher_suites: bool = True
    # Toolkit keys refused, declared so that their error says what to use instead.
    cert: object = None
    key: object = None
    client_ca: object = None
    client_allowed_sans: object = None
    curve_preferences: object = None
    _unsupported = field_validator(
        "cert", "key", "client_ca", "client_allowed_sans", "curve_preferences"
    )(_Strict._refuse)

    @field_validator("client_auth_type")
    @classmethod
    def _verified(cls, value: ClientAuth) -> ClientAuth:
        if value not in _VERIFY_MODES:
            raise ValueError(
                f"{value} accepts a client certificate without verifying it; "
                f"use {ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT} with client_ca_file"
            )
        return value

    @field_validator("cipher_suites")
    @classmethod
    def _known_suites(cls, suites: list[str]) -> list[str]:
        unknown = [suite for suite in suites if suite not in CIPHER_SUITES]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)}: not offered; choose from {', '.join(CIPHER_SUITES)}"
            )
        return suites

    def problems(self) -> list[str]:
        """What no single field shows: settings that need, or contradict, one another."""
        problems = []
        if self.cert_file is None:
            problems.append("cert_file: required (with key_file) to serve TLS")
        if self.key_file is None:
            problems.append("key_file: required (with cert_file) to serve TLS")
        verifies = self.client_auth_type is not ClientAuth.NO_CLIENT_CERT
        if verifies and self.client_ca_file is None:
            problems.append(f"client_ca_file: required by client_auth_type {self.client_auth_type}")
        if self.client_ca_file is not None and not verifies:
            problems.append(
                "client_auth_type: NoClientCert ignores client_ca_file; use "
                f"{ClientAuth.REQUIRE_AND_VERIFY_CLIENT_CERT}"
            )
        if TLS_VERSIONS[self.max_version] < TLS_VERSIONS[self.min_version]:
            problems.append(f"max_version: {self.max_version} is below min_version")
        return [f"tls_server_config.{problem}" for problem in problems]


class HTTPServerConfig(_Strict):
    http2: bool = True
    """Accepted for files shared with Go exporters; this listener speaks HTTP/1.1, which
    Prometheus negotiates on its own."""
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("headers")
    @classmethod
    def _known_headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if name not in _HEADERS:
                raise ValueError(f"{name}: not settable; choose from {', '.join(_HEADERS)}")
            allowed = _HEADERS[name]
            if allowed is not None and value.lower() not in allowed:
                raise ValueError(f"{name}: must be one of {', '.join(sorted(allowed))}")
        return {name: value for name, value in headers.items() if value}


def _bcrypt_hash(value: str) -> str:
    """Never echoes the value: it may be a password pasted where its hash belongs."""
    match = _BCRYPT_HASH.fullmatch(value)
    if match is None:
        raise ValueError(
            "not a bcrypt hash (plain-text passwords are refused); generate one with "
            f"`htpasswd -nBC {MIN_BCRYPT_COST} \"\" | tr -d ':\\n'`"
        )
    if int(match["cost"]) < MIN_BCRYPT_COST:
        raise ValueError(
            f"bcrypt cost {int(match['cost'])} is too low; hash again with cost "
            f"{MIN_BCRYPT_COST} or more"
        )
    return value


def _user_names(users: dict[str, str]) -> dict[str, str]:
    for user in users:
        if not user or ":" in user:
            raise ValueError(f"{user!r}: a basic auth user name is not empty and has no ':'")
    return users


class WebConfigFile(_Strict):
    """The file, as the toolkit documents it (docs/web-configuration.md)."""

    tls_server_config: TLSServerConfig | None = None
    http_server_config: HTTPServerConfig = HTTPServerConfig()
    basic_auth_users: Annotated[
        dict[str, Annotated[str, AfterValidator(_bcrypt_hash)]], AfterValidator(_user_names)
    ] = Field(default_factory=dict)
    rate_limit: object = None  # refused, as above
    _unsupported = field_validator("rate_limit")(_Strict._refuse)


class WebConfigError(Exception):
    """Files the web config names that cannot be used, one ``field: problem`` per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# Spent on user names that do not exist, so a wrong name costs what a wrong password does.
_UNKNOWN_USER_HASH = b"$2b$10$t458rIHTGnyUPY/GWlI0XuiW6Qs6PnUbXdWVmUpzbDAcwue3VGBbO"


def _password_matches(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes: no hash can match it
        return False


class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt costs ~70 ms a check on purpose, far too much for every scrape, so (as the
    toolkit does) a verified password is remembered: per user, as a keyed SHA-256 of it,
    compared in constant time. A reload builds a new instance, forgetting everything.
    """

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._hashes = {user: hashed.encode() for user, hashed in hashes.items()}
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}

    def __repr__(self) -> str:
        """Never the hashes, wherever an instance ends up (a log line, a traceback)."""
        return f"{len(self._hashes)} user(s)"

    async def allows(self, authorization: str | None) -> bool:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        user, password = credentials
        fingerprint = hmac.new(self._key, password, hashlib.sha256).digest()
        remembered = self._verified.get(user)
        if remembered is not None and hmac.compare_digest(remembered, fingerprint):
            return True
        hashed = self._hashes.get(user, _UNKNOWN_USER_HASH)
        matches = await asyncio.to_thread(_password_matches, password, hashed)
        if not matches or user not in self._hashes:
            return False
        self._verified[user] = fingerprint
        return True


def _basic_credentials(authorization: str | None) -> tuple[str, bytes] | None:
    scheme, _, encoded = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, separator, password = decoded.partition(b":")
        return (user.decode(), password) if separator else None
    except (binascii.Error, UnicodeDecodeError):
        return None


@dataclasses.dataclass(frozen=True)
class ListenerSecurity:
    """What one web config file asks of the listener; the default asks nothing."""

    source: Path | None = None
    tls: ssl.SSLContext | None = None
    users: BasicAuth | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        if self.source is None:
            return "plain HTTP, no authentication (no server.web_config_file)"
        scheme = "TLS" if self.tls is not None else "plain HTTP"
        auth = "no authentication" if self.users is None else f"basic auth ({self.users})"
        return f"{scheme}, {auth}, from {self.source}"


OPEN_LISTENER = ListenerSecurity()


def listener_security(web_config: WebConfigFile, source: Path) -> ListenerSecurity:
    """Build the TLS context and the user table; file paths are relative to ``source``'s
    directory, as in the toolkit. Raises WebConfigError naming each unusable file."""
    tls = web_config.tls_server_config
    if tls is not None and (problems := tls.problems()):
        raise WebConfigError(problems)
    return ListenerSecurity(
        source=source,
        tls=None if tls is None else _server_context(tls, source.parent),
        users=BasicAuth(web_config.basic_auth_users) if web_config.basic_auth_users else None,
        headers=web_config.http_server_config.headers,
    )


class _EncryptedKeyError(Exception):
    pass


def _no_passphrase() -> bytes:
    """OpenSSL would otherwise ask for one on the terminal, which a daemon has not."""
    raise _EncryptedKeyError


def _server_context(tls: TLSServerConfig, base: Path) -> ssl.SSLContext:
    # Both present: see TLSServerConfig.problems.
    assert tls.cert_file is not None
    assert tls.key_file is not None
    files = {"cert_file": base / tls.cert_file, "key_file": base / tls.key_file}
    if tls.client_ca_file is not None:
        files["client_ca_file"] = base / tls.client_ca_file
    problems = [
        f"tls_server_config.{field}: cannot read {path}: {reason}"
        for field, path in files.items()
        if (reason := _unreadable(path))
    ]
    if problems:
        raise WebConfigError(problems)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.cipher_suites:
        context.set_ciphers(":".join(CIPHER_SUITES[suite] for suite in tls.cipher_suites))
    if not tls.prefer_server_cipher_suites:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(files["cert_file"], files["key_file"], password=_no_passphrase)
    except _EncryptedKeyError:
        raise WebConfigError(
            ["tls_server_config.key_file: is encrypted; give an unencrypted key (mode 0400)"]
        ) from None
    except ssl.SSLError as error:
        field = "key_file" if "KEY_VALUES_MISMATCH" in str(error) else "cert_file"
        raise WebConfigError(
            [
                f"tls_server_config.{field}: {files['cert_file']} and {files['key_file']} are "
                f"not a PEM certificate and its key ({error.reason or error})"
            ]
        ) from None
    context.verify_mode = _VERIFY_MODES[tls.client_auth_type]
    if "client_ca_file" in files:
        try:
            context.load_verify_locations(cafile=files["client_ca_file"])
        except ssl.SSLError as error:
            raise WebConfigError(
                [
                    f"tls_server_config.client_ca_file: {files['client_ca_file']} holds no PEM "
                    f"CA certificate ({error.reason or error})"
                ]
            ) from None
    return context


def _unreadable(path: Path) -> str | None:
    try:
        path.read_bytes()
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


class SwappableTLS(ssl.SSLContext):
    """The listening socket's TLS context, whose certificate, key, client CA and versions a
    reload may replace: asyncio asks the context it was given for each new connection's
    TLS object (``wrap_bio``), and this one hands that to the context now in force.
    Connections already open keep theirs."""

    current: ssl.SSLContext

    @classmethod
    def serving(cls, context: ssl.SSLContext) -> SwappableTLS:
        swappable = cls(ssl.PROTOCOL_TLS_SERVER)
        swappable.current = context
        return swappable

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return self.current.wrap_bio(incoming, outgoing, server_side, server_hostname, session)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def protect(app: web.Application, current: Callable[[], ListenerSecurity]) -> None:
    """Ask for credentials on every path but the probes, and add the file's headers to
    every answer, as the web config in force (``current()``, which a reload replaces) says."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        users = current().users
        if (
            users is None
            or request.path in OPEN_PATHS
            or await users.allows(request.headers.get(hdrs.AUTHORIZATION))
        ):
            return await handler(request)
        return web.Response(
            status=401,
            text="401 Unauthorized\n",
            headers={hdrs.WWW_AUTHENTICATE: f'Basic realm="{REALM}"'},
        )

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers.update(current().headers)

    app.middlewares.append(authenticate)
    app.on_response_prepare.append(add_headers)
