from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from monitor.atlas import ApiKey, ApiVersion, ServiceAccount
from monitor.config import (
    DEFAULT_BASE_URL,
    DEFAULT_PORT,
    ConfigError,
    load_settings,
    parse_config,
    resolve_config_path,
)
from monitor.providers import CloudProvider
from tests.helpers import (
    CREDENTIALS_ENV,
    ENDPOINT_ID,
    GROUP_ID,
    PRIVATE_KEY,
    WriteConfig,
    config_document,
    endpoint_entry,
)

REPO = Path(__file__).resolve().parent.parent


def problems_of(raw: object, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, environ or {})
    return caught.value.problems


def test_minimal_config_gets_contract_defaults() -> None:
    config = parse_config(config_document(), {})
    assert config.atlas.base_url == DEFAULT_BASE_URL
    assert config.atlas.timeout_seconds == 10
    assert config.atlas.max_retries == 3
    assert config.poll.interval_seconds == 60
    assert config.poll.concurrency == 8
    assert config.poll.max_requests_per_minute == 100
    assert (config.server.host, config.server.port) == ("0.0.0.0", DEFAULT_PORT)
    assert (config.log.level, config.log.format) == ("info", "json")
    assert not config.add_missing.enabled
    assert config.add_missing.max_attempts == 3
    assert config.alerts.unreachable_after_failures == 3
    assert config.alerts.stuck_after_seconds == 1800
    assert config.alerts.repeat_interval_seconds == 0
    endpoint = config.endpoints[0]
    assert endpoint.display_name == ENDPOINT_ID
    assert str(endpoint.ref) == f"{GROUP_ID}/5e3a1b2c7a3e5a48f5497de4/{ENDPOINT_ID}"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (config_document(atlas={"timeout": 5}), "atlas.timeout: unknown key"),
        (config_document(colour="blue"), "colour: unknown key"),
        (
            config_document(endpoints=[endpoint_entry(region="us-east-1")]),
            "endpoints.0.region: unknown key",
        ),
        (
            config_document(endpoints=[endpoint_entry(group_id="5e2211c1")]),
            "endpoints.0.group_id: must be 24 hexadecimal characters",
        ),
        (
            config_document(endpoints=[endpoint_entry(group_id=123456789012345678901234)]),
            "endpoints.0.group_id: must be text; quote it in YAML",
        ),
        (
            config_document(endpoints=[endpoint_entry(private_link_id="zz" * 12)]),
            "endpoints.0.private_link_id: must be 24 hexadecimal characters",
        ),
        (
            config_document(endpoints=[endpoint_entry(interface_endpoint_id="vpce-123")]),
            "endpoints.0.interface_endpoint_id: must be an AWS interface endpoint id: 'vpce-'",
        ),
        (
            config_document(endpoints=[endpoint_entry(interface_endpoint_id="vpc-0b9c5701")]),
            "endpoints.0.interface_endpoint_id: must be an AWS interface endpoint id: 'vpce-'",
        ),
        (
            config_document(endpoints=[{"group_id": GROUP_ID}]),
            "endpoints.0.private_link_id: required",
        ),
        (
            config_document(endpoints=[]),
            "endpoints: give at least one endpoint, or a discover entry",
        ),
        ({}, "endpoints: give at least one endpoint, or a discover entry"),
        (
            config_document(poll={"interval_seconds": 0}),
            "poll.interval_seconds: Input should be greater than or equal to 0.05",
        ),
        (
            config_document(poll={"interval_seconds": -5}),
            "poll.interval_seconds: Input should be greater than or equal to 0.05",
        ),
        (
            config_document(poll={"concurrency": 0}),
            "poll.concurrency: Input should be greater than or equal to 1",
        ),
        (
            config_document(poll={"max_requests_per_minute": 0}),
            "poll.max_requests_per_minute: Input should be greater than or equal to 1",
        ),
        (
            config_document(atlas={"timeout_seconds": 0}),
            "atlas.timeout_seconds: Input should be greater than or equal to 0.1",
        ),
        (
            config_document(atlas={"max_retries": -1}),
            "atlas.max_retries: Input should be greater than or equal to 0",
        ),
        (
            config_document(server={"port": 70000}),
            "server.port: Input should be less than or equal to 65535",
        ),
        (config_document(log={"format": "xml"}), "log.format: Input should be 'json' or 'console'"),
        (config_document(log={"level": "verbose"}), "log.level: Input should be"),
        (
            config_document(add_missing={"max_attempts": 0}),
            "add_missing.max_attempts: Input should be greater than or equal to 1",
        ),
        (
            config_document(alerts={"unreachable_after_failures": 0}),
            "alerts.unreachable_after_failures: Input should be greater than or equal to 1",
        ),
        (
            config_document(alerts={"stuck_after_seconds": -1}),
            "alerts.stuck_after_seconds: Input should be greater than or equal to 0",
        ),
        (
            config_document(endpoints=[endpoint_entry(labels={"team-name": "x"})]),
            "endpoints.0.labels: 'team-name' is not a valid Prometheus label name",
        ),
        (
            config_document(endpoints=[endpoint_entry(labels={"status": "x"})]),
            "endpoints.0.labels: 'status' is set by the exporter itself",
        ),
        (
            config_document(endpoints=[endpoint_entry(add_if_missing="sometimes")]),
            "endpoints.0.add_if_missing: Input should be a valid boolean",
        ),
        (
            config_document(atlas={"base_url": "cloud.mongodb.com"}),
            "atlas.base_url: must be an http:// or https:// URL",
        ),
        (
            config_document(atlas={"base_url": "https://cloud.mongodb.com/api/atlas/v1.0"}),
            "atlas.base_url: give the host only",
        ),
        (["endpoints"], "(top level): must be a mapping of sections, got list"),
    ],
)
def test_each_rejection_names_its_field(document: Any, expected: str) -> None:
    assert any(problem.startswith(expected) for problem in problems_of(document)), expected


def test_every_problem_is_reported_at_once() -> None:
    document = config_document(
        poll={"interval_seconds": 0, "concurrency": -1},
        endpoints=[endpoint_entry(group_id="nope", interface_endpoint_id="vpce-x")],
    )
    problems = problems_of(document)
    assert {problem.split(":")[0] for problem in problems} == {
        "poll.interval_seconds",
        "poll.concurrency",
        "endpoints.0.group_id",
        "endpoints.0.interface_endpoint_id",
    }


def test_duplicate_endpoints_are_rejected_even_when_case_differs() -> None:
    document = config_document(
        endpoints=[
            endpoint_entry(),
            endpoint_entry(name="other"),
            endpoint_entry(group_id=GROUP_ID.upper()),
        ]
    )
    problems = problems_of(document)
    assert [problem.split(":")[0] for problem in problems] == ["endpoints.1", "endpoints.2"]
    assert "duplicate of endpoints.0" in problems[0]


def test_same_interface_endpoint_under_another_private_link_is_not_a_duplicate() -> None:
    document = config_document(
        endpoints=[endpoint_entry(), endpoint_entry(private_link_id="5e3a1b2c7a3e5a48f5497aaa")]
    )
    assert len(parse_config(document, {}).endpoints) == 2


def test_log_settings_accept_any_case() -> None:
    config = parse_config(config_document(log={"level": "WARNING", "format": "Console"}), {})
    assert (config.log.level, config.log.format) == ("warning", "console")


def test_base_url_comes_from_env_when_set() -> None:
    config = parse_config(
        config_document(atlas={"base_url": "https://example.invalid"}),
        {"MONGODB_ATLAS_BASE_URL": "http://127.0.0.1:10480/"},
    )
    assert config.atlas.base_url == "http://127.0.0.1:10480"


def test_state_is_in_memory_by_default_and_the_env_path_wins_over_the_file() -> None:
    assert parse_config(config_document(), {}).state.path is None
    document = config_document(state={"path": "/from/config.db", "lock_wait_seconds": 3})
    assert parse_config(document, {}).state.path == Path("/from/config.db")
    config = parse_config(document, {"ATLAS_MONITOR_STATE_PATH": "/from/env.db"})
    assert (config.state.path, config.state.lock_wait_seconds) == (Path("/from/env.db"), 3)
    assert problems_of(config_document(state={"lock_wait_seconds": -1})) == [
        "state.lock_wait_seconds: Input should be greater than or equal to 0"
    ]


def test_per_endpoint_add_if_missing_overrides_global_switch() -> None:
    document = config_document(
        add_missing={"enabled": True},
        endpoints=[
            endpoint_entry(),
            endpoint_entry(interface_endpoint_id="vpce-0123abcd", add_if_missing=False),
        ],
    )
    config = parse_config(document, {})
    assert [config.wants_add(endpoint) for endpoint in config.endpoints] == [True, False]


def test_load_settings_reads_credentials(write_config: WriteConfig) -> None:
    settings = load_settings(write_config(), CREDENTIALS_ENV)
    assert settings.credentials.login == ApiKey("test-public-key", SecretStr(PRIVATE_KEY))
    assert settings.credentials.secret.get_secret_value() == PRIVATE_KEY
    assert PRIVATE_KEY not in repr(settings)


def test_private_key_may_come_from_a_file(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = tmp_path / "private-key"
    key_file.write_text(f"{PRIVATE_KEY}\n", encoding="utf-8")
    env = {
        "MONGODB_ATLAS_PUBLIC_API_KEY": "pub",
        "MONGODB_ATLAS_PRIVATE_API_KEY_FILE": str(key_file),
    }
    key_file.chmod(0o400)
    settings = load_settings(write_config(), env)
    assert settings.credentials.secret.get_secret_value() == PRIVATE_KEY
    assert settings.credentials.warnings == ()


@pytest.mark.parametrize("mode", [0o644, 0o440, 0o604])
def test_a_key_file_others_may_read_is_warned_about_but_used(
    write_config: WriteConfig, tmp_path: Path, mode: int
) -> None:
    key_file = tmp_path / "private-key"
    key_file.write_text(PRIVATE_KEY, encoding="utf-8")
    key_file.chmod(mode)
    env = {
        "MONGODB_ATLAS_PUBLIC_API_KEY": "pub",
        "MONGODB_ATLAS_PRIVATE_API_KEY_FILE": str(key_file),
    }

    credentials = load_settings(write_config(), env).credentials

    assert credentials.secret.get_secret_value() == PRIVATE_KEY
    (warning,) = credentials.warnings
    assert warning.startswith(f"env.MONGODB_ATLAS_PRIVATE_API_KEY_FILE: {key_file} has mode ")
    assert f"{mode:04o}" in warning
    assert "chmod 0400" in warning
    assert PRIVATE_KEY not in warning


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {},
            [
                "env.MONGODB_ATLAS_PUBLIC_API_KEY: not set",
                "env.MONGODB_ATLAS_PRIVATE_API_KEY: not set",
            ],
        ),
        (
            {"MONGODB_ATLAS_PUBLIC_API_KEY": "pub", "MONGODB_ATLAS_PRIVATE_API_KEY": "  "},
            ["env.MONGODB_ATLAS_PRIVATE_API_KEY: not set"],
        ),
        (
            {
                "MONGODB_ATLAS_PUBLIC_API_KEY": "pub",
                "MONGODB_ATLAS_PRIVATE_API_KEY": PRIVATE_KEY,
                "MONGODB_ATLAS_PRIVATE_API_KEY_FILE": "/run/secrets/key",
            },
            ["env.MONGODB_ATLAS_PRIVATE_API_KEY: set only one of"],
        ),
        (
            {
                "MONGODB_ATLAS_PUBLIC_API_KEY": "pub",
                "MONGODB_ATLAS_PRIVATE_API_KEY_FILE": "/nonexistent/key",
            },
            ["env.MONGODB_ATLAS_PRIVATE_API_KEY_FILE: cannot read /nonexistent/key: No such file"],
        ),
    ],
)
def test_credential_problems_name_the_variable(
    write_config: WriteConfig, env: dict[str, str], expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(), env)
    problems = caught.value.problems
    assert len(problems) == len(expected)
    for problem, prefix in zip(problems, expected, strict=True):
        assert problem.startswith(prefix)
    assert PRIVATE_KEY not in str(caught.value)


def test_empty_key_file_is_an_error(write_config: WriteConfig, tmp_path: Path) -> None:
    key_file = tmp_path / "empty"
    key_file.write_text("\n", encoding="utf-8")
    env = {
        "MONGODB_ATLAS_PUBLIC_API_KEY": "pub",
        "MONGODB_ATLAS_PRIVATE_API_KEY_FILE": str(key_file),
    }
    with pytest.raises(ConfigError, match=r"MONGODB_ATLAS_PRIVATE_API_KEY_FILE: .* is empty"):
        load_settings(write_config(), env)


def test_config_and_credential_problems_are_reported_together(write_config: WriteConfig) -> None:
    path = write_config(config_document(poll={"concurrency": 0}))
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    fields = [problem.split(":")[0] for problem in caught.value.problems]
    assert fields == [
        "poll.concurrency",
        "env.MONGODB_ATLAS_PUBLIC_API_KEY",
        "env.MONGODB_ATLAS_PRIVATE_API_KEY",
    ]


def test_yaml_syntax_error_names_file_and_line(write_config: WriteConfig) -> None:
    path = write_config("endpoints:\n  - group_id: [unclosed\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, CREDENTIALS_ENV)
    assert caught.value.problems[0].startswith(f"{path}: line 3")


def test_missing_file_is_reported_on_the_config_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--config: cannot read .*nope.yaml: No such file"):
        load_settings(tmp_path / "nope.yaml", CREDENTIALS_ENV)


def test_config_path_falls_back_to_env_then_fails_clearly() -> None:
    assert resolve_config_path("a.yaml", {"ATLAS_MONITOR_CONFIG": "b.yaml"}) == Path("a.yaml")
    assert resolve_config_path(None, {"ATLAS_MONITOR_CONFIG": "b.yaml"}) == Path("b.yaml")
    with pytest.raises(
        ConfigError, match="--config: not given and ATLAS_MONITOR_CONFIG is not set"
    ):
        resolve_config_path(None, {})


@pytest.mark.parametrize("name", ["example.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    settings = load_settings(REPO / "config" / name, CREDENTIALS_ENV)
    assert settings.config.endpoints


# Atlas Administration API v2: providers, discovery, service accounts

AZURE_ID = (
    "/subscriptions/3f2a1b4c-5d6e-4f70-8a9b-0c1d2e3f4a5b/resourceGroups/payments-rg/"
    "providers/Microsoft.Network/privateEndpoints/payments-pe"
)
V2 = {"api_version": "v2"}


def test_v2_takes_every_provider_with_its_own_id_format() -> None:
    config = parse_config(
        config_document(
            atlas=V2,
            endpoints=[
                endpoint_entry(),
                endpoint_entry(cloud_provider="AZURE", interface_endpoint_id=AZURE_ID),
                endpoint_entry(cloud_provider="GCP", interface_endpoint_id="analytics-psc"),
            ],
        ),
        {},
    )

    assert [endpoint.cloud_provider for endpoint in config.endpoints] == list(CloudProvider)
    assert config.endpoints[1].ref.cloud_provider is CloudProvider.AZURE
    assert config.atlas.api_version is ApiVersion.V2


def test_the_default_stays_v1_and_aws() -> None:
    config = parse_config(config_document(), {})

    assert config.atlas.api_version is ApiVersion.V1
    assert config.endpoints[0].cloud_provider is CloudProvider.AWS
    assert config.discover == []


@pytest.mark.parametrize(
    ("provider", "endpoint_id", "expected"),
    [
        ("AZURE", "vpce-0b9c5701325cb15dd", "must be an Azure private endpoint resource id"),
        ("GCP", "Analytics_PSC", "must be a GCP endpoint group name"),
        ("AWS", "analytics-psc", "must be an AWS interface endpoint id"),
        ("GCP", "a" * 64, "must be a GCP endpoint group name"),
        ("AZURE", AZURE_ID.replace("privateEndpoints", "virtualNetworks"), "must be an Azure"),
    ],
)
def test_an_id_of_the_wrong_shape_for_its_provider_names_the_field(
    provider: str, endpoint_id: str, expected: str
) -> None:
    entry = endpoint_entry(cloud_provider=provider, interface_endpoint_id=endpoint_id)

    problems = problems_of(config_document(atlas=V2, endpoints=[entry]))

    (problem,) = problems
    assert problem.startswith(f"endpoints.0.interface_endpoint_id: {expected}")


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            config_document(
                endpoints=[endpoint_entry(cloud_provider="AZURE", interface_endpoint_id=AZURE_ID)]
            ),
            "endpoints.0.cloud_provider: AZURE needs atlas.api_version: v2",
        ),
        (
            config_document(discover=[{"group_id": GROUP_ID}]),
            "discover: needs atlas.api_version: v2",
        ),
        (
            config_document(
                atlas=V2,
                endpoints=[
                    endpoint_entry(
                        cloud_provider="GCP", interface_endpoint_id="psc", add_if_missing=True
                    )
                ],
            ),
            "endpoints.0.add_if_missing: only AWS endpoints can be added",
        ),
        (
            config_document(endpoints=[endpoint_entry(cloud_provider="aws")]),
            "endpoints.0.cloud_provider: Input should be 'AWS', 'AZURE' or 'GCP'",
        ),
        (
            config_document(atlas=V2, discover=[{"group_id": GROUP_ID, "cloud_providers": []}]),
            "discover.0.cloud_providers: List should have at least 1 item",
        ),
        (
            config_document(
                atlas=V2, discover=[{"group_id": GROUP_ID, "labels": {"cloud_provider": "x"}}]
            ),
            "discover.0.labels: 'cloud_provider' is set by the exporter itself",
        ),
    ],
)
def test_v2_rules_are_checked_across_sections(document: Any, expected: str) -> None:
    problems = problems_of(document)

    assert any(problem.startswith(expected) for problem in problems), problems


def test_discovery_alone_is_a_valid_config() -> None:
    config = parse_config(
        {"atlas": V2, "discover": [{"group_id": GROUP_ID.upper(), "labels": {"env": "prod"}}]},
        {},
    )

    (entry,) = config.discover
    assert entry.group_id == GROUP_ID
    assert entry.cloud_providers == list(CloudProvider)
    assert config.endpoints == []
    assert config.poll.discover_every_cycles == 10


def test_azure_duplicates_differing_only_in_case_are_caught() -> None:
    entries = [
        endpoint_entry(cloud_provider="AZURE", interface_endpoint_id=AZURE_ID),
        endpoint_entry(cloud_provider="AZURE", interface_endpoint_id=AZURE_ID.lower()),
    ]

    (problem,) = problems_of(config_document(atlas=V2, endpoints=entries))

    assert problem.startswith("endpoints.1: duplicate of endpoints.0")


SERVICE_ACCOUNT_ENV = {
    "MONGODB_ATLAS_CLIENT_ID": "mdb_sa_id_1234",
    "MONGODB_ATLAS_CLIENT_SECRET": "mdb_sa_sk_SeCrEt",
}


def test_a_service_account_logs_in_instead_of_an_api_key(write_config: WriteConfig) -> None:
    credentials = load_settings(write_config(), SERVICE_ACCOUNT_ENV).credentials

    assert credentials.login == ServiceAccount("mdb_sa_id_1234", SecretStr("mdb_sa_sk_SeCrEt"))
    assert credentials.secret.get_secret_value() == "mdb_sa_sk_SeCrEt"
    assert credentials.describe() == (
        "service account mdb_sa_id_1234, client secret from MONGODB_ATLAS_CLIENT_SECRET"
    )
    assert "SeCrEt" not in repr(credentials)


def test_the_client_secret_may_come_from_a_file(write_config: WriteConfig, tmp_path: Path) -> None:
    secret_file = tmp_path / "client-secret"
    secret_file.write_text("mdb_sa_sk_SeCrEt\n", encoding="utf-8")
    secret_file.chmod(0o400)
    env = {
        "MONGODB_ATLAS_CLIENT_ID": "mdb_sa_id_1234",
        "MONGODB_ATLAS_CLIENT_SECRET_FILE": str(secret_file),
    }

    credentials = load_settings(write_config(), env).credentials

    assert credentials.secret.get_secret_value() == "mdb_sa_sk_SeCrEt"
    assert credentials.warnings == ()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {**CREDENTIALS_ENV, **SERVICE_ACCOUNT_ENV},
            "env.MONGODB_ATLAS_CLIENT_ID: set either an API key",
        ),
        (
            {"MONGODB_ATLAS_CLIENT_SECRET": "mdb_sa_sk_SeCrEt"},
            "env.MONGODB_ATLAS_CLIENT_ID: not set",
        ),
        (
            {"MONGODB_ATLAS_CLIENT_ID": "mdb_sa_id_1234"},
            "env.MONGODB_ATLAS_CLIENT_SECRET: not set",
        ),
        ({}, "env.MONGODB_ATLAS_PUBLIC_API_KEY: not set"),
    ],
)
def test_credential_mix_ups_are_named(
    write_config: WriteConfig, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(write_config(), env)

    assert any(problem.startswith(expected) for problem in caught.value.problems)
    assert "SeCrEt" not in str(caught.value)
