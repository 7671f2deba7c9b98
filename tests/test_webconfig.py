"""The listener's TLS and basic auth (server.web_config_file), over real sockets: aiohttp
clients, a `run` child process, and Debian's Prometheus scraping with tls_config and
basic_auth. Certificates come from throwaway CAs made here."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import signal
import socket
import ssl
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import bcrypt
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from structlog.testing import capture_logs

from monitor import webconfig
from monitor.cli import main
from monitor.config import ConfigError, load_settings
from monitor.simulator import Scenario
from monitor.webconfig import MIN_BCRYPT_COST, BasicAuth
from tests.helpers import (
    CREDENTIALS_ENV,
    Process,
    StartDaemon,
    StartSimulator,
    config_document,
    endpoint_entry,
    healthcheck,
    query,
    running_prometheus,
    simulated,
    subprocess_env,
    unused_port,
)

USER = "prometheus"
PASSWORD = "scrape-secret-7c1f"
PASSWORD_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(MIN_BCRYPT_COST)).decode()
REALM_CHALLENGE = 'Basic realm="atlas-endpoint-monitor"'
ENDPOINT = endpoint_entry()
DEADLINE_SECONDS = 30


class CertificateAuthority:
    """A CA of its own, writing PEM files into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        certificate = (
            self._builder(self._name, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert_file = directory / f"{name}.pem"
        self.cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> Any:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self._name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )

    def issue(
        self, name: str, *, server: bool, passphrase: bytes | None = None
    ) -> tuple[Path, Path]:
        """(certificate, key) for 127.0.0.1 and localhost (a server) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        certificate = (
            self._builder(
                x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key()
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        encryption: serialization.KeySerializationEncryption = (
            serialization.NoEncryption()
            if passphrase is None
            else serialization.BestAvailableEncryption(passphrase)
        )
        cert_file = self.directory / f"{name}.pem"
        key_file = self.directory / f"{name}-key.pem"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )
        key_file.chmod(0o400)
        return cert_file, key_file

    def client_context(self, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        """What a scraper trusting this CA uses (with a client certificate if given)."""
        context = ssl.create_default_context(cafile=self.cert_file)
        if client is not None:
            context.load_cert_chain(*client)
        return context


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, "scrape-ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority(tmp_path, "other-ca")


def tls_section(ca: CertificateAuthority, **options: Any) -> dict[str, Any]:
    """A tls_server_config with a fresh server certificate from ``ca`` (relative paths)."""
    cert_file, key_file = ca.issue("server", server=True)
    return {"cert_file": cert_file.name, "key_file": key_file.name, **options}


def write_config_files(
    directory: Path, web_config: dict[str, Any] | str, atlas_url: str, **server: Any
) -> Path:
    """web.yml and config.yaml side by side, the config naming the web config relatively."""
    web = directory / "web.yml"
    web.write_text(web_config if isinstance(web_config, str) else yaml.safe_dump(web_config))
    document = config_document(
        atlas={"base_url": atlas_url, "timeout_seconds": 5, "max_retries": 0},
        poll={"interval_seconds": 1, "max_requests_per_minute": None},
        server={"host": "127.0.0.1", "port": 0, "web_config_file": web.name, **server},
        endpoints=[ENDPOINT],
    )
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def get(
    url: str, context: ssl.SSLContext | bool, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.request(method, url, ssl=context, headers=headers) as response,
    ):
        return response.status, dict(response.headers), await response.text()


# --- `check`: every unusable web config is an error naming its field --------------------

PROBLEMS = [
    ("missing", None, "server.web_config_file: cannot read "),
    ("not yaml", "tls_server_config: [", "server.web_config_file: "),
    (
        "TLS 1.1",
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server-key.pem",
                "min_version": "TLS11",
            }
        },
        "server.web_config_file: tls_server_config.min_version: TLS11 is too weak",
    ),
    (
        "plain-text password",
        {"basic_auth_users": {USER: PASSWORD}},
        f"server.web_config_file: basic_auth_users.{USER}: not a bcrypt hash",
    ),
    (
        "cheap bcrypt",
        {"basic_auth_users": {USER: bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()}},
        f"server.web_config_file: basic_auth_users.{USER}: bcrypt cost 4 is too low",
    ),
    (
        "key without certificate",
        {"tls_server_config": {"key_file": "server-key.pem"}},
        "server.web_config_file: tls_server_config.cert_file: required",
    ),
    (
        "unverified client certificates",
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server-key.pem",
                "client_auth_type": "RequireAnyClientCert",
            }
        },
        "server.web_config_file: tls_server_config.client_auth_type: RequireAnyClientCert accepts",
    ),
    (
        "client CA without verification",
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server-key.pem",
                "client_ca_file": "scrape-ca.pem",
            }
        },
        "server.web_config_file: tls_server_config.client_auth_type: NoClientCert ignores",
    ),
    (
        "verification without client CA",
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server-key.pem",
                "client_auth_type": "RequireAndVerifyClientCert",
            }
        },
        "server.web_config_file: tls_server_config.client_ca_file: required by client_auth_type",
    ),
    (
        "missing certificate file",
        {"tls_server_config": {"cert_file": "nowhere.pem", "key_file": "server-key.pem"}},
        "server.web_config_file: tls_server_config.cert_file: cannot read ",
    ),
    (
        "key of another certificate",
        {"tls_server_config": {"cert_file": "server.pem", "key_file": "client-key.pem"}},
        "server.web_config_file: tls_server_config.key_file: ",
    ),
    (
        "encrypted key",
        {"tls_server_config": {"cert_file": "locked.pem", "key_file": "locked-key.pem"}},
        "server.web_config_file: tls_server_config.key_file: is encrypted",
    ),
    (
        "not a CA file",
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server-key.pem",
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": "config.yaml",
            }
        },
        "server.web_config_file: tls_server_config.client_ca_file: ",
    ),
    (
        "unsupported toolkit key",
        {
            "tls_server_config": {
                "cert_file": "server.pem",
                "key_file": "server-key.pem",
                "client_allowed_sans": ["a"],
            }
        },
        "server.web_config_file: tls_server_config.client_allowed_sans: not supported",
    ),
    (
        "unknown key",
        {"tls_server_confg": {}},
        "server.web_config_file: tls_server_confg: unknown key",
    ),
    (
        "unknown header",
        {"http_server_config": {"headers": {"Server": "x"}}},
        "server.web_config_file: http_server_config.headers: Server: not settable",
    ),
]


@pytest.mark.parametrize(
    ("web_config", "problem"),
    [case[1:] for case in PROBLEMS],
    ids=[case[0] for case in PROBLEMS],
)
def test_each_unusable_web_config_is_a_check_error_naming_its_field(
    ca: CertificateAuthority,
    tmp_path: Path,
    web_config: dict[str, Any] | str | None,
    problem: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca.issue("server", server=True)
    ca.issue("client", server=False)
    ca.issue("locked", server=True, passphrase=b"unlock")
    path = write_config_files(tmp_path, web_config or {}, "http://127.0.0.1:1")
    if web_config is None:
        (tmp_path / "web.yml").unlink()

    with pytest.raises(ConfigError) as raised:
        load_settings(path, CREDENTIALS_ENV)
    for name, value in CREDENTIALS_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["check", "--config", str(path)]) == 2
    _, err = capsys.readouterr()

    assert any(line.startswith(problem) for line in raised.value.problems), raised.value.problems
    assert f"  {problem}" in err
    assert PASSWORD not in err


def test_check_describes_the_listener_and_never_shows_a_hash(
    ca: CertificateAuthority,
    tmp_path: Path,
    credentials_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config_files(
        tmp_path,
        {"tls_server_config": tls_section(ca), "basic_auth_users": {USER: PASSWORD_HASH}},
        "http://127.0.0.1:1",
    )
    assert main(["check", "--config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"listener:     TLS, basic auth (1 user(s)), from {tmp_path / 'web.yml'}" in out
    assert "/-/reload:    off (server.enable_reload)" in out
    assert PASSWORD_HASH not in out + err


# --- basic auth: bcrypt once per verified password ---------------------------------------


@pytest.fixture
def bcrypt_checks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The passwords bcrypt was asked to check, in order."""
    checked: list[bytes] = []
    real = webconfig._password_matches

    def counting(password: bytes, hashed: bytes) -> bool:
        checked.append(password)
        return real(password, hashed)

    monkeypatch.setattr(webconfig, "_password_matches", counting)
    return checked


async def test_a_verified_password_is_remembered_and_a_wrong_one_always_costs_bcrypt(
    bcrypt_checks: list[bytes],
) -> None:
    auth = BasicAuth({USER: PASSWORD_HASH})
    right = basic(USER, PASSWORD)["Authorization"]
    wrong = basic(USER, "guess")["Authorization"]

    assert [await auth.allows(right) for _ in range(3)] == [True, True, True]
    assert bcrypt_checks == [PASSWORD.encode()]
    assert [await auth.allows(wrong) for _ in range(2)] == [False, False]
    assert bcrypt_checks == [PASSWORD.encode(), b"guess", b"guess"]
    # An unknown user costs a bcrypt check too, so timing does not tell which names exist;
    # and a known password does not open another user's name.
    assert not await auth.allows(basic("nobody", PASSWORD)["Authorization"])
    assert len(bcrypt_checks) == 4
    assert await auth.allows(right)
    assert PASSWORD_HASH not in repr(auth)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer abc",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:x").decode(),
        "Basic " + base64.b64encode(f"{USER}:{'x' * 100}".encode()).decode(),
    ],
)
async def test_malformed_credentials_are_refused(header: str | None) -> None:
    assert not await BasicAuth({USER: PASSWORD_HASH}).allows(header)


# --- the daemon over TLS with basic auth ------------------------------------------------


async def secured_daemon(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    directory: Path,
    web_config: dict[str, Any],
    **server: Any,
) -> tuple[str, Path]:
    """A daemon serving the web config (read as `run` reads it), its first cycle done;
    returns its URL and its config file, which its reloads re-read."""
    _, atlas_url = await start_simulator(Scenario(endpoints=[simulated(ENDPOINT)]))
    path = write_config_files(directory, web_config, atlas_url, **server)
    settings = load_settings(path, CREDENTIALS_ENV)
    daemon = await start_daemon(settings, load=lambda: load_settings(path, CREDENTIALS_ENV))
    await asyncio.wait_for(daemon.monitor.wait_for_cycles(1), 10)
    return daemon.url, path


async def test_tls_and_basic_auth_guard_everything_but_the_probes(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    web = {
        "tls_server_config": tls_section(ca),
        "basic_auth_users": {USER: PASSWORD_HASH},
        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
    }
    with capture_logs() as logs:
        url, _ = await secured_daemon(start_simulator, start_daemon, tmp_path, web)
    trusting = ca.client_context()

    assert url.startswith("https://127.0.0.1:")
    for probe, expected in (("/healthz", "ok\n"), ("/readyz", "ready\n")):
        status, headers, body = await get(f"{url}{probe}", trusting)
        assert (status, body) == (200, expected), probe
        assert headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/metrics", "/"):
        for credentials in ({}, basic(USER, "wrong"), basic("intruder", PASSWORD)):
            status, headers, body = await get(f"{url}{path}", trusting, **credentials)
            assert status == 401, (path, credentials)
            assert headers["WWW-Authenticate"] == REALM_CHALLENGE
            assert "atlas_" not in body
    status, _, body = await get(f"{url}/metrics", trusting, **basic(USER, PASSWORD))
    assert status == 200
    assert "atlas_interface_endpoint_up{" in body
    # /-/reload is off by default: not there, for those who may ask at all.
    assert (await get(f"{url}/-/reload", trusting, "POST"))[0] == 401
    assert (await get(f"{url}/-/reload", trusting, "POST", **basic(USER, PASSWORD)))[0] == 404
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(f"{url}/healthz", ssl.create_default_context())
    logged = json.dumps(logs, default=str)
    assert PASSWORD_HASH not in logged
    assert PASSWORD not in logged


async def test_mutual_tls_refuses_a_client_certificate_from_another_ca_and_none(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    web = {
        "tls_server_config": tls_section(
            ca,
            client_auth_type="RequireAndVerifyClientCert",
            client_ca_file=ca.cert_file.name,
            min_version="TLS13",
        )
    }
    url, _ = await secured_daemon(start_simulator, start_daemon, tmp_path, web)
    ours = ca.client_context(ca.issue("scraper", server=False))
    theirs = ca.client_context(other_ca.issue("stranger", server=False))

    assert (await get(f"{url}/metrics", ours))[0] == 200
    for context in (theirs, ca.client_context()):
        with pytest.raises(aiohttp.ClientError):
            await get(f"{url}/metrics", context)
    assert (await get(f"{url}/healthz", ours))[0] == 200


async def test_a_reload_applies_a_new_web_config_and_refuses_a_weak_one(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    ca: CertificateAuthority,
    other_ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    web = {"tls_server_config": tls_section(ca), "basic_auth_users": {USER: PASSWORD_HASH}}
    url, _ = await secured_daemon(start_simulator, start_daemon, tmp_path, web, enable_reload=True)
    reload_url = f"{url}/-/reload"
    assert (await get(reload_url, ca.client_context(), "POST"))[0] == 401

    new_password = "rotated-8d2e"
    new_hash = bcrypt.hashpw(new_password.encode(), bcrypt.gensalt(MIN_BCRYPT_COST)).decode()
    new_web = {"tls_server_config": tls_section(other_ca), "basic_auth_users": {USER: new_hash}}
    (tmp_path / "web.yml").write_text(yaml.safe_dump(new_web))
    status, _, text = await get(reload_url, ca.client_context(), "POST", **basic(USER, PASSWORD))
    assert (status, text) == (200, "config reloaded\n")

    # New connections get the new certificate, and only the new password opens them.
    rotated = other_ca.client_context()
    assert (await get(f"{url}/metrics", rotated, **basic(USER, PASSWORD)))[0] == 401
    assert (await get(f"{url}/metrics", rotated, **basic(USER, new_password)))[0] == 200
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await get(f"{url}/healthz", ca.client_context())

    weak = {
        **new_web,
        "tls_server_config": {**new_web["tls_server_config"], "min_version": "TLS11"},
    }
    (tmp_path / "web.yml").write_text(yaml.safe_dump(weak))
    status, _, text = await get(reload_url, rotated, "POST", **basic(USER, new_password))
    assert status == 500
    assert "server.web_config_file: tls_server_config.min_version: TLS11 is too weak" in text
    status, _, metrics = await get(f"{url}/metrics", rotated, **basic(USER, new_password))
    assert status == 200
    assert "atlas_monitor_config_last_reload_successful 0.0" in metrics


async def test_turning_tls_off_needs_a_restart_and_the_listener_keeps_serving_tls(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    web = {"tls_server_config": tls_section(ca)}
    url, _ = await secured_daemon(start_simulator, start_daemon, tmp_path, web, enable_reload=True)
    (tmp_path / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {USER: PASSWORD_HASH}}))
    with capture_logs() as logs:
        assert (await get(f"{url}/-/reload", ca.client_context(), "POST"))[0] == 200

    (unapplied,) = [line for line in logs if line["event"] == "config_reload_needs_restart"]
    assert unapplied["sections"] == ["server"]
    # Still TLS with the old certificate; the new users apply at once.
    assert (await get(f"{url}/metrics", ca.client_context()))[0] == 401
    assert (await get(f"{url}/metrics", ca.client_context(), **basic(USER, PASSWORD)))[0] == 200


async def test_the_image_healthcheck_passes_over_tls(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    web = {"tls_server_config": tls_section(ca), "basic_auth_users": {USER: PASSWORD_HASH}}
    url, _ = await secured_daemon(start_simulator, start_daemon, tmp_path, web)
    assert await asyncio.to_thread(healthcheck, f"{url}/healthz") == 0
    assert await asyncio.to_thread(healthcheck, f"{url}/metrics") != 0


# --- `run` as operators start it: plain HTTP against the TLS listener -------------------


def test_plain_http_against_the_tls_listener_fails_cleanly_and_the_daemon_serves_on(
    simulator_process: Callable[..., tuple[Process, str]],
    ca: CertificateAuthority,
    tmp_path: Path,
) -> None:
    _, atlas_url = simulator_process()
    port = unused_port()
    path = write_config_files(
        tmp_path, {"tls_server_config": tls_section(ca)}, atlas_url, port=port
    )
    daemon = Process(["run", "--config", str(path)], subprocess_env())
    try:
        started = json.loads(daemon.wait_for_line(lambda line: '"monitor_started"' in line))
        answers = [plain_http_get(port) for _ in range(3)]
        with urllib.request.urlopen(  # noqa: S310 (https to 127.0.0.1)
            f"{started['url']}/healthz", timeout=10, context=ca.client_context()
        ) as response:
            healthy = (response.status, response.read())
    finally:
        exit_code = daemon.stop(signal.SIGTERM)
    output = "\n".join(daemon.all_output())

    assert started["url"] == f"https://127.0.0.1:{port}"
    assert all(not answer.startswith(b"HTTP/") for answer in answers), answers
    assert healthy == (200, b"ok\n")
    assert exit_code == 0
    assert "Traceback" not in output
    assert '"level": "error"' not in output


def plain_http_get(port: int) -> bytes:
    """What a plain-HTTP client gets back: a TLS alert or nothing, never an HTTP answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = b""
        while chunk := connection.recv(4096):
            received += chunk
    return received


# --- Debian's Prometheus scraping over TLS with basic_auth ------------------------------


@pytest.fixture
def scrape_jobs(
    ca: CertificateAuthority, other_ca: CertificateAuthority
) -> Callable[[str], list[dict[str, Any]]]:
    """Prometheus scrape configs for a target: one as it should be, and one per refusal."""
    ours = ca.issue("scraper", server=False)
    theirs = other_ca.issue("stranger", server=False)

    def jobs(target: str) -> list[dict[str, Any]]:
        def job(name: str, client: tuple[Path, Path], **auth: Any) -> dict[str, Any]:
            return {
                "job_name": name,
                "scheme": "https",
                "tls_config": {
                    "ca_file": str(ca.cert_file),
                    "cert_file": str(client[0]),
                    "key_file": str(client[1]),
                },
                **auth,
                "static_configs": [{"targets": [target]}],
            }

        return [
            job("secured", ours, basic_auth={"username": USER, "password": PASSWORD}),
            job("wrong_password", ours, basic_auth={"username": USER, "password": "guess"}),
            job("no_password", ours),
            job("other_ca", theirs, basic_auth={"username": USER, "password": PASSWORD}),
        ]

    return jobs


async def test_prometheus_scrapes_over_tls_with_basic_auth_and_is_refused_otherwise(
    start_simulator: StartSimulator,
    start_daemon: StartDaemon,
    ca: CertificateAuthority,
    scrape_jobs: Callable[[str], list[dict[str, Any]]],
    prometheus_binary: str,
    tmp_path: Path,
) -> None:
    web = {
        "tls_server_config": tls_section(
            ca, client_auth_type="RequireAndVerifyClientCert", client_ca_file=ca.cert_file.name
        ),
        "basic_auth_users": {USER: PASSWORD_HASH},
    }
    url, _ = await secured_daemon(start_simulator, start_daemon, tmp_path, web)
    config = {
        "global": {"scrape_interval": "1s"},
        "scrape_configs": scrape_jobs(url.removeprefix("https://")),
    }
    prometheus_dir = tmp_path / "prometheus"
    prometheus_dir.mkdir()
    async with (
        running_prometheus(prometheus_binary, config, prometheus_dir) as prometheus,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
    ):
        targets = await wait_for_every_target_scraped(session, prometheus)
        endpoint_up = await query(session, prometheus, 'atlas_interface_endpoint_up{job="secured"}')

    health = {job: target["health"] for job, target in targets.items()}
    assert health == {
        "secured": "up",
        "wrong_password": "down",
        "no_password": "down",
        "other_ca": "down",
    }
    assert "401 Unauthorized" in targets["wrong_password"]["lastError"]
    assert "401 Unauthorized" in targets["no_password"]["lastError"]
    # Refused in the TLS handshake, before any HTTP: Go sees the connection end (EOF).
    assert "server returned HTTP status" not in targets["other_ca"]["lastError"]
    assert [sample["value"][1] for sample in endpoint_up] == ["1"]


async def wait_for_every_target_scraped(
    session: aiohttp.ClientSession, prometheus: str
) -> dict[str, dict[str, Any]]:
    """Each job's target, once every one has been scraped at least once (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_SECONDS
    while loop.time() < deadline:
        async with session.get(f"{prometheus}/api/v1/targets") as response:
            active = (await response.json())["data"]["activeTargets"]
        targets = {target["labels"]["job"]: target for target in active}
        if len(targets) == 4 and all(t["health"] != "unknown" for t in targets.values()):
            return targets
        await asyncio.sleep(0.5)
    raise AssertionError(f"not every target scraped within {DEADLINE_SECONDS} s: {targets}")
