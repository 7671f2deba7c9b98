"""Configuration: the YAML schema, credentials from the environment, and one readable error.

Operators meet this module when something is wrong, so every problem is reported at once,
each as ``field.path: what is wrong``, and the private key can never end up in a message.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from monitor.atlas import (
    AZURE_PRIVATE_ENDPOINT_ID,
    GCP_ENDPOINT_GROUP_NAME,
    INTERFACE_ENDPOINT_ID,
    OBJECT_ID,
    ApiKey,
    ApiVersion,
    CloudProvider,
    EndpointRef,
    Login,
    ServiceAccount,
)

DEFAULT_BASE_URL = "https://cloud.mongodb.com"
DEFAULT_PORT = 9479

CONFIG_PATH_ENV = "ATLAS_MONITOR_CONFIG"
BASE_URL_ENV = "MONGODB_ATLAS_BASE_URL"
PUBLIC_KEY_ENV = "MONGODB_ATLAS_PUBLIC_API_KEY"
PRIVATE_KEY_ENV = "MONGODB_ATLAS_PRIVATE_API_KEY"
PRIVATE_KEY_FILE_ENV = "MONGODB_ATLAS_PRIVATE_API_KEY_FILE"
CLIENT_ID_ENV = "MONGODB_ATLAS_CLIENT_ID"
CLIENT_SECRET_ENV = "MONGODB_ATLAS_CLIENT_SECRET"  # noqa: S105 (a variable's name)
CLIENT_SECRET_FILE_ENV = "MONGODB_ATLAS_CLIENT_SECRET_FILE"  # noqa: S105 (a variable's name)
STATE_PATH_ENV = "ATLAS_MONITOR_STATE_PATH"

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Labels the exporter sets itself; a user label with one of these names would clash.
RESERVED_LABELS = frozenset(
    {
        "group_id",
        "private_link_id",
        "interface_endpoint_id",
        "cloud_provider",
        "name",
        "status",
        "job",
        "instance",
    }
)


class ConfigError(Exception):
    """Every problem found in the configuration, one ``field.path: message`` per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def _text_id(value: object) -> object:
    """YAML reads an all-digit id as a number and drops its leading zeros: say so."""
    if isinstance(value, int | float):
        raise ValueError(f"must be text; quote it in YAML ('{value}')")
    return value


def _object_id(value: str) -> str:
    if not OBJECT_ID.fullmatch(value):
        raise ValueError(f"must be 24 hexadecimal characters, got {value!r}")
    return value.lower()


# What an endpoint id looks like on each provider, and how to say so when it does not.
_ENDPOINT_ID_FORMATS = {
    CloudProvider.AWS: (
        INTERFACE_ENDPOINT_ID,
        "an AWS interface endpoint id: 'vpce-' followed by 8 or 17 lowercase hexadecimal "
        "characters",
    ),
    CloudProvider.AZURE: (
        AZURE_PRIVATE_ENDPOINT_ID,
        "an Azure private endpoint resource id: /subscriptions/<uuid>/resourceGroups/<group>"
        "/providers/Microsoft.Network/privateEndpoints/<name>",
    ),
    CloudProvider.GCP: (
        GCP_ENDPOINT_GROUP_NAME,
        "a GCP endpoint group name: lowercase letters, digits and '-', starting with a letter, "
        "at most 63 characters",
    ),
}


def check_endpoint_id(value: str, provider: CloudProvider) -> str:
    pattern, description = _ENDPOINT_ID_FORMATS[provider]
    if not pattern.fullmatch(value):
        raise ValueError(f"must be {description}, got {value!r}")
    return value


ObjectId = Annotated[str, BeforeValidator(_text_id), AfterValidator(_object_id)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AtlasSettings(_Section):
    base_url: str = DEFAULT_BASE_URL
    api_version: ApiVersion = ApiVersion.V1
    """v2 is Atlas' current API and the only one for Azure, GCP and discovery."""
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=10)

    @field_validator("base_url")
    @classmethod
    def _plain_origin(cls, value: str) -> str:
        """The client appends the API root itself, so a pasted full API URL is a mistake."""
        value = value.rstrip("/")
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        if "/api/atlas" in value:
            raise ValueError(
                "give the host only (e.g. https://cloud.mongodb.com); /api/atlas/v1.0 is added"
            )
        return value


# Atlas documented 100 requests per minute per project for its Administration API; its
# limits are now token buckets per endpoint set, without one published number, so this is a
# conservative default that the 429 handling backs up.
DEFAULT_MAX_REQUESTS_PER_MINUTE = 100


class PollSettings(_Section):
    interval_seconds: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=8, gt=0, le=1000)
    max_requests_per_minute: int | None = Field(default=DEFAULT_MAX_REQUESTS_PER_MINUTE, gt=0)
    """Per project (group_id): its requests start at least 60/this seconds apart; null = no
    pacing."""
    discover_every_cycles: int = Field(default=10, gt=0)
    """How often ``discover`` lists the endpoint services: every this many poll cycles."""


class ServerSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """0 lets the system pick a free port (the log says which), for tests and demos."""


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        """``INFO`` and ``info`` mean the same to every operator."""
        return value.lower() if isinstance(value, str) else value


class AddMissingSettings(_Section):
    enabled: bool = False
    dry_run: bool = False
    recreate_failed: bool = False
    max_attempts: int = Field(default=3, gt=0)


class AlertSettings(_Section):
    unreachable_after_failures: int = Field(default=3, gt=0)
    stuck_after_seconds: float = Field(default=1800.0, ge=0)
    repeat_interval_seconds: float = Field(default=0.0, ge=0)


class StateSettings(_Section):
    path: Path | None = None
    """The SQLite file that keeps state across restarts (docs/state.md); None = memory only."""
    lock_wait_seconds: float = Field(default=15.0, ge=0)
    """How long a starting daemon waits for another process to release the file (a rolling
    restart's old process needs up to 10 s to exit) before refusing to start."""


def _prometheus_label_names(labels: dict[str, str]) -> dict[str, str]:
    for label in labels:
        if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
            raise ValueError(f"{label!r} is not a valid Prometheus label name")
        if label in RESERVED_LABELS:
            raise ValueError(f"{label!r} is set by the exporter itself; choose another name")
    return labels


UserLabels = Annotated[dict[str, str], AfterValidator(_prometheus_label_names)]


class EndpointConfig(_Section):
    group_id: ObjectId
    private_link_id: ObjectId
    """The endpoint service id (v2 calls it endpointServiceId)."""
    cloud_provider: CloudProvider = CloudProvider.AWS
    interface_endpoint_id: Annotated[str, BeforeValidator(_text_id)]
    """AWS: the vpce id; Azure: the private endpoint's resource id; GCP: the endpoint group."""
    name: str | None = Field(default=None, min_length=1)
    labels: UserLabels = Field(default_factory=dict)
    add_if_missing: bool | None = None

    @field_validator("interface_endpoint_id")
    @classmethod
    def _id_of_its_provider(cls, value: str, info: ValidationInfo) -> str:
        provider = info.data.get("cloud_provider")
        if provider is None:
            return value  # the provider itself is wrong, which is reported already
        return check_endpoint_id(value, provider)

    @functools.cached_property
    def ref(self) -> EndpointRef:
        """Cached: every poll and every scrape looks endpoints up by it."""
        return EndpointRef(
            self.group_id, self.private_link_id, self.interface_endpoint_id, self.cloud_provider
        )

    @property
    def display_name(self) -> str:
        """Alerts and tables always need a name; the endpoint id is the honest fallback."""
        return self.name or self.interface_endpoint_id


def endpoint_identity(endpoint: EndpointConfig) -> dict[str, str]:
    """The fields that name an endpoint in every log line about it."""
    return {
        "group_id": endpoint.group_id,
        "private_link_id": endpoint.private_link_id,
        "interface_endpoint_id": endpoint.interface_endpoint_id,
        "name": endpoint.display_name,
    }


class DiscoverSettings(_Section):
    """Watch every endpoint of a project's endpoint services, whatever the static list says."""

    group_id: ObjectId
    cloud_providers: list[CloudProvider] = Field(
        default_factory=lambda: list(CloudProvider), min_length=1
    )
    labels: UserLabels = Field(default_factory=dict)
    """Put on the _info series of every endpoint found."""

    @field_validator("cloud_providers")
    @classmethod
    def _once_each(cls, providers: list[CloudProvider]) -> list[CloudProvider]:
        return list(dict.fromkeys(providers))


class MonitorConfig(_Section):
    atlas: AtlasSettings = AtlasSettings()
    poll: PollSettings = PollSettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    add_missing: AddMissingSettings = AddMissingSettings()
    alerts: AlertSettings = AlertSettings()
    state: StateSettings = StateSettings()
    endpoints: list[EndpointConfig] = Field(default_factory=list)
    discover: list[DiscoverSettings] = Field(default_factory=list)

    def wants_add(self, endpoint: EndpointConfig) -> bool:
        """Per-endpoint ``add_if_missing`` wins over the global switch; only AWS endpoints
        can be added (Azure and GCP need addresses only the operator's cloud knows)."""
        if endpoint.cloud_provider is not CloudProvider.AWS:
            return False
        if endpoint.add_if_missing is not None:
            return endpoint.add_if_missing
        return self.add_missing.enabled


@dataclasses.dataclass(frozen=True)
class Credentials:
    login: Login
    secret_source: str
    """The environment variable (and file) the private key or client secret came from, for
    ``check``."""
    warnings: tuple[str, ...] = ()
    """Usable, but worth an operator's attention (a key file others may read)."""

    @property
    def secret(self) -> SecretStr:
        """What must never be shown: the private key or the client secret."""
        if isinstance(self.login, ServiceAccount):
            return self.login.client_secret
        return self.login.private_key

    def describe(self) -> str:
        if isinstance(self.login, ServiceAccount):
            return (
                f"service account {self.login.client_id}, client secret from {self.secret_source}"
            )
        return f"public key {self.login.public_key}, private key from {self.secret_source}"


@dataclasses.dataclass(frozen=True)
class Settings:
    """What the program runs on: the validated file plus the credentials from the environment."""

    config: MonitorConfig
    credentials: Credentials
    source: Path


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str]) -> Path:
    value = cli_value or environ.get(CONFIG_PATH_ENV)
    if not value:
        raise ConfigError([f"--config: not given and {CONFIG_PATH_ENV} is not set"])
    return Path(value)


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and combine everything; raise one ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    config = None
    try:
        config = parse_config(_read_yaml(path), env)
    except ConfigError as error:
        problems.extend(error.problems)
    credentials, credential_problems = _credentials_from(env)
    problems.extend(credential_problems)
    if problems or config is None or credentials is None:
        raise ConfigError(problems)
    return Settings(config=config, credentials=credentials, source=path)


def parse_config(raw: object, environ: Mapping[str, str]) -> MonitorConfig:
    """Validate an already-parsed YAML document, applying the base URL and state path
    overrides from env."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): must be a mapping of sections, got {type(raw).__name__}"])
    base_url = environ.get(BASE_URL_ENV)
    if base_url:
        atlas = raw.get("atlas")
        raw = {**raw, "atlas": {**(atlas if isinstance(atlas, dict) else {}), "base_url": base_url}}
    state_path = environ.get(STATE_PATH_ENV)
    if state_path:
        state = raw.get("state")
        raw = {**raw, "state": {**(state if isinstance(state, dict) else {}), "path": state_path}}
    try:
        config = MonitorConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(flatten_validation_error(error)) from None
    problems = _duplicate_endpoints(config.endpoints) + _cross_section_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def _cross_section_problems(config: MonitorConfig) -> list[str]:
    """Rules that tie one section to another, which no single field can check."""
    problems = []
    v2 = config.atlas.api_version is ApiVersion.V2
    if not config.endpoints and not config.discover:
        problems.append("endpoints: give at least one endpoint, or a discover entry")
    if config.discover and not v2:
        problems.append("discover: needs atlas.api_version: v2")
    for index, endpoint in enumerate(config.endpoints):
        provider = endpoint.cloud_provider
        if provider is not CloudProvider.AWS and not v2:
            problems.append(
                f"endpoints.{index}.cloud_provider: {provider} needs atlas.api_version: v2 "
                "(v1.0 serves AWS only)"
            )
        if provider is not CloudProvider.AWS and endpoint.add_if_missing:
            problems.append(
                f"endpoints.{index}.add_if_missing: only AWS endpoints can be added; "
                f"a {provider} endpoint needs details only your cloud account knows"
            )
    return problems


def _duplicate_endpoints(endpoints: list[EndpointConfig]) -> list[str]:
    """Ids are compared after normalisation, so a change of case is still caught."""
    first_seen: dict[EndpointRef, int] = {}
    problems = []
    for index, endpoint in enumerate(endpoints):
        earlier = first_seen.setdefault(endpoint.ref.key, index)
        if earlier != index:
            problems.append(f"endpoints.{index}: duplicate of endpoints.{earlier} ({endpoint.ref})")
    return problems


def flatten_validation_error(error: ValidationError) -> list[str]:
    return [
        f"{_field_path(detail['loc'])}: {_friendly_message(detail)}"
        for detail in error.errors(include_url=False)
    ]


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def _friendly_message(detail: Any) -> str:
    kind = detail["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    message = str(detail["msg"])
    # pydantic prefixes messages raised by our own validators; the prefix adds nothing.
    return message.removeprefix("Value error, ")


def _read_yaml(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"--config: cannot read {path}: {error.strerror or error}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1}, column {mark.column + 1}"
        reason = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}:{where}: {reason}"]) from None


def _credentials_from(env: Mapping[str, str]) -> tuple[Credentials | None, list[str]]:
    """An API key (Digest) or a service account (OAuth), whichever the environment holds;
    both at once is a mistake an operator must resolve, not a choice made for them."""
    public_key = env.get(PUBLIC_KEY_ENV, "").strip()
    client_id = env.get(CLIENT_ID_ENV, "").strip()
    wants_service_account = bool(
        client_id or env.get(CLIENT_SECRET_ENV, "").strip() or env.get(CLIENT_SECRET_FILE_ENV)
    )
    if public_key and wants_service_account:
        return None, [
            f"env.{CLIENT_ID_ENV}: set either an API key ({PUBLIC_KEY_ENV}, ...) or a service "
            f"account ({CLIENT_ID_ENV}, ...), not both"
        ]
    if wants_service_account:
        return _service_account_from(env, client_id)
    problems = []
    if not public_key:
        problems.append(
            f"env.{PUBLIC_KEY_ENV}: not set (the Atlas programmatic API public key; or use a "
            f"service account: {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV})"
        )
    try:
        private_key, source, warnings = _secret_from(env, PRIVATE_KEY_ENV, PRIVATE_KEY_FILE_ENV)
    except ConfigError as error:
        return None, problems + error.problems
    if problems:
        return None, problems
    return Credentials(ApiKey(public_key, private_key), source, warnings), []


def _service_account_from(
    env: Mapping[str, str], client_id: str
) -> tuple[Credentials | None, list[str]]:
    problems = []
    if not client_id:
        problems.append(f"env.{CLIENT_ID_ENV}: not set (the service account's client id)")
    try:
        secret, source, warnings = _secret_from(env, CLIENT_SECRET_ENV, CLIENT_SECRET_FILE_ENV)
    except ConfigError as error:
        return None, problems + error.problems
    if problems:
        return None, problems
    return Credentials(ServiceAccount(client_id, secret), source, warnings), []


def _secret_from(
    env: Mapping[str, str], inline_name: str, file_name: str
) -> tuple[SecretStr, str, tuple[str, ...]]:
    """The secret, where it came from (exactly one place, so an operator is never unsure),
    and any warnings about how it is stored."""
    inline = env.get(inline_name, "").strip()
    key_file = env.get(file_name, "").strip()
    if inline and key_file:
        raise ConfigError([f"env.{inline_name}: set only one of {inline_name} and {file_name}"])
    if inline:
        return SecretStr(inline), inline_name, ()
    if not key_file:
        raise ConfigError([f"env.{inline_name}: not set (nor {file_name})"])
    try:
        from_file = Path(key_file).read_text(encoding="utf-8").strip()
        mode = Path(key_file).stat().st_mode
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        # A secret pasted into the _FILE variable by mistake must not be echoed back.
        shown = key_file if os.sep in key_file else "its value (not shown: not a path)"
        raise ConfigError([f"env.{file_name}: cannot read {shown}: {reason}"]) from None
    if not from_file:
        raise ConfigError([f"env.{file_name}: {key_file} is empty"])
    warnings: tuple[str, ...] = ()
    if stat.S_IMODE(mode) & 0o077:
        # Read-only for the owner is all the daemon needs; like ssh, say so, but carry on.
        warnings = (
            f"env.{file_name}: {key_file} has mode {stat.S_IMODE(mode):04o}, so "
            "other users may read the secret in it; chmod 0400 it (Kubernetes: "
            "defaultMode: 0400)",
        )
    return SecretStr(from_file), f"{file_name} ({key_file})", warnings
