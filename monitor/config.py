"""Configuration: the YAML schema, credentials from the environment, and one readable error.

Operators meet this module when something is wrong, so every problem is reported at once,
each as ``field.path: what is wrong``, and the private key can never end up in a message.
"""

from __future__ import annotations

import functools
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
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
    field_validator,
)

from monitor.atlas import INTERFACE_ENDPOINT_ID, OBJECT_ID, EndpointRef

DEFAULT_BASE_URL = "https://cloud.mongodb.com"
DEFAULT_PORT = 9479

CONFIG_PATH_ENV = "ATLAS_MONITOR_CONFIG"
BASE_URL_ENV = "MONGODB_ATLAS_BASE_URL"
PUBLIC_KEY_ENV = "MONGODB_ATLAS_PUBLIC_API_KEY"
PRIVATE_KEY_ENV = "MONGODB_ATLAS_PRIVATE_API_KEY"
PRIVATE_KEY_FILE_ENV = "MONGODB_ATLAS_PRIVATE_API_KEY_FILE"

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Labels the exporter sets itself; a user label with one of these names would clash.
RESERVED_LABELS = frozenset(
    {"group_id", "private_link_id", "interface_endpoint_id", "name", "status", "job", "instance"}
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


def _interface_endpoint_id(value: str) -> str:
    if not INTERFACE_ENDPOINT_ID.fullmatch(value):
        raise ValueError(
            f"must be 'vpce-' followed by 8 or 17 lowercase hexadecimal characters, got {value!r}"
        )
    return value


ObjectId = Annotated[str, BeforeValidator(_text_id), AfterValidator(_object_id)]
InterfaceEndpointId = Annotated[
    str, BeforeValidator(_text_id), AfterValidator(_interface_endpoint_id)
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AtlasSettings(_Section):
    base_url: str = DEFAULT_BASE_URL
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


class EndpointConfig(_Section):
    group_id: ObjectId
    private_link_id: ObjectId
    interface_endpoint_id: InterfaceEndpointId
    name: str | None = Field(default=None, min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    add_if_missing: bool | None = None

    @field_validator("labels")
    @classmethod
    def _prometheus_label_names(cls, labels: dict[str, str]) -> dict[str, str]:
        for label in labels:
            if not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(f"{label!r} is not a valid Prometheus label name")
            if label in RESERVED_LABELS:
                raise ValueError(f"{label!r} is set by the exporter itself; choose another name")
        return labels

    @functools.cached_property
    def ref(self) -> EndpointRef:
        """Cached: every poll and every scrape looks endpoints up by it."""
        return EndpointRef(self.group_id, self.private_link_id, self.interface_endpoint_id)

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


class MonitorConfig(_Section):
    atlas: AtlasSettings = AtlasSettings()
    poll: PollSettings = PollSettings()
    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    add_missing: AddMissingSettings = AddMissingSettings()
    alerts: AlertSettings = AlertSettings()
    endpoints: list[EndpointConfig] = Field(min_length=1)

    def wants_add(self, endpoint: EndpointConfig) -> bool:
        """Per-endpoint ``add_if_missing`` wins over the global switch."""
        if endpoint.add_if_missing is not None:
            return endpoint.add_if_missing
        return self.add_missing.enabled


@dataclass(frozen=True)
class Credentials:
    public_key: str
    private_key: SecretStr
    private_key_source: str
    """The environment variable (and file) the private key came from, for ``check``."""
    warnings: tuple[str, ...] = ()
    """Usable, but worth an operator's attention (a key file others may read)."""


@dataclass(frozen=True)
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
    """Validate an already-parsed YAML document, applying the base URL override from env."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"(top level): must be a mapping of sections, got {type(raw).__name__}"])
    base_url = environ.get(BASE_URL_ENV)
    if base_url:
        atlas = raw.get("atlas")
        raw = {**raw, "atlas": {**(atlas if isinstance(atlas, dict) else {}), "base_url": base_url}}
    try:
        config = MonitorConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(flatten_validation_error(error)) from None
    duplicates = _duplicate_endpoints(config.endpoints)
    if duplicates:
        raise ConfigError(duplicates)
    return config


def _duplicate_endpoints(endpoints: list[EndpointConfig]) -> list[str]:
    """Ids are compared after normalisation, so a change of case is still caught."""
    first_seen: dict[EndpointRef, int] = {}
    problems = []
    for index, endpoint in enumerate(endpoints):
        earlier = first_seen.setdefault(endpoint.ref, index)
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
    problems = []
    public_key = env.get(PUBLIC_KEY_ENV, "").strip()
    if not public_key:
        problems.append(f"env.{PUBLIC_KEY_ENV}: not set (the Atlas programmatic API public key)")
    try:
        private_key, source, warnings = _private_key_from(env)
    except ConfigError as error:
        return None, problems + error.problems
    if problems:
        return None, problems
    return Credentials(public_key, private_key, source, warnings), []


def _private_key_from(env: Mapping[str, str]) -> tuple[SecretStr, str, tuple[str, ...]]:
    """The key, where it came from (exactly one place, so an operator is never unsure), and
    any warnings about how it is stored."""
    inline = env.get(PRIVATE_KEY_ENV, "").strip()
    key_file = env.get(PRIVATE_KEY_FILE_ENV, "").strip()
    if inline and key_file:
        raise ConfigError(
            [f"env.{PRIVATE_KEY_ENV}: set only one of {PRIVATE_KEY_ENV} and {PRIVATE_KEY_FILE_ENV}"]
        )
    if inline:
        return SecretStr(inline), PRIVATE_KEY_ENV, ()
    if not key_file:
        raise ConfigError([f"env.{PRIVATE_KEY_ENV}: not set (nor {PRIVATE_KEY_FILE_ENV})"])
    try:
        from_file = Path(key_file).read_text(encoding="utf-8").strip()
        mode = Path(key_file).stat().st_mode
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        # A key pasted into the _FILE variable by mistake must not be echoed back.
        shown = key_file if os.sep in key_file else "its value (not shown: not a path)"
        raise ConfigError([f"env.{PRIVATE_KEY_FILE_ENV}: cannot read {shown}: {reason}"]) from None
    if not from_file:
        raise ConfigError([f"env.{PRIVATE_KEY_FILE_ENV}: {key_file} is empty"])
    warnings: tuple[str, ...] = ()
    if stat.S_IMODE(mode) & 0o077:
        # Read-only for the owner is all the daemon needs; like ssh, say so, but carry on.
        warnings = (
            f"env.{PRIVATE_KEY_FILE_ENV}: {key_file} has mode {stat.S_IMODE(mode):04o}, so "
            "other users may read the private key; chmod 0400 it (Kubernetes: "
            "defaultMode: 0400)",
        )
    return SecretStr(from_file), f"{PRIVATE_KEY_FILE_ENV} ({key_file})", warnings
