"""Configuration: the YAML schema, credentials from the environment, and one readable error.

Operators meet this module when something is wrong, so every problem is reported at once,
each as ``field.path: what is wrong``, and the private key can never end up in a message.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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

from monitor.atlas import ApiKey, ApiVersion, EndpointRef, Login, ServiceAccount
from monitor.logs import secret_forms
from monitor.providers import OBJECT_ID_RULE, PROVIDERS, CloudProvider, provider_names
from monitor.webconfig import (
    OPEN_LISTENER,
    ListenerSecurity,
    WebConfigError,
    WebConfigFile,
    listener_security,
)

DEFAULT_BASE_URL = "https://cloud.mongodb.com"
DEFAULT_PORT = 10479

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
    return OBJECT_ID_RULE.check(value).lower()


def check_endpoint_id(value: str, provider: CloudProvider) -> str:
    return PROVIDERS[provider].endpoint_id.check(value)


ObjectId = Annotated[str, BeforeValidator(_text_id), AfterValidator(_object_id)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _bounded(default: float, low: float, high: float) -> Any:
    """A finite number within [low, high]: inf, nan and values that overflow a timer or
    stop polling for good (1e15 s) are config errors, not surprises at the first reload."""
    return Field(default=default, ge=low, le=high, allow_inf_nan=False)


def _count(default: int | None, low: int, high: int) -> Any:
    """A whole number within [low, high]; pydantic refuses inf and nan for an int already."""
    return Field(default=default, ge=low, le=high)


DAY_SECONDS = 86_400


class AtlasSettings(_Section):
    base_url: str = DEFAULT_BASE_URL
    api_version: ApiVersion = ApiVersion.V1
    """v2 is Atlas' current API and the only one for Azure, GCP and discovery."""
    timeout_seconds: float = _bounded(10.0, 0.1, 300.0)
    max_retries: int = _count(3, 0, 10)
    allow_insecure_http: bool = False
    """Plain http:// to a host other than loopback sends the private key's Digest or the
    client secret and Bearer tokens in clear text: only when the operator says so."""

    @field_validator("base_url")
    @classmethod
    def _plain_origin(cls, value: str) -> str:
        """The client appends the API root itself, so a pasted full API URL is a mistake.
        The value is only echoed once it is known to hold no user info (a password)."""
        value = value.rstrip("/")
        if "@" in value:
            raise ValueError(
                "must not hold user info (user:password@): credentials come from the "
                "environment only (the value is not shown)"
            )
        if not re.fullmatch(r"https?://[^/\s?#@]+(/[^\s?#]*)?", value):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        if "/api/atlas" in value:
            raise ValueError(
                "give the host only (e.g. https://cloud.mongodb.com); /api/atlas/v1.0 is added"
            )
        return value

    @property
    def insecure(self) -> bool:
        """Plain HTTP to a host that is not this machine: credentials cross a network."""
        url = urlsplit(self.base_url)
        return url.scheme == "http" and not _is_loopback(url.hostname or "")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Atlas documented 100 requests per minute per project for its Administration API; its
# limits are now token buckets per endpoint set, without one published number, so this is a
# conservative default that the 429 handling backs up.
DEFAULT_MAX_REQUESTS_PER_MINUTE = 100


DEFAULT_MAX_DISCOVERED_ENDPOINTS = 5000


class PollSettings(_Section):
    interval_seconds: float = _bounded(60.0, 0.05, DAY_SECONDS)
    concurrency: int = _count(8, 1, 1000)
    max_requests_per_minute: int | None = _count(DEFAULT_MAX_REQUESTS_PER_MINUTE, 1, 100_000)
    """Per project (group_id): its requests start at least 60/this seconds apart; null = no
    pacing."""
    discover_every_cycles: int = _count(10, 1, 10_000)
    """How often ``discover`` lists the endpoint services: every this many poll cycles."""
    max_discovered_endpoints: int = _count(DEFAULT_MAX_DISCOVERED_ENDPOINTS, 1, 100_000)
    """Most endpoints ``discover`` adds, all entries together: one runaway listing must not
    grow the daemon's memory and /metrics without bound."""


class ServerSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    """0 lets the system pick a free port (the log says which), for tests and demos."""
    web_config_file: Path | None = None
    """TLS and basic auth, in Prometheus' exporter-toolkit format (monitor.webconfig); a
    relative path is relative to this config file."""
    enable_reload: bool = False
    """Serve POST /-/reload (off by default, as Prometheus' --web.enable-lifecycle)."""


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
    max_attempts: int = _count(3, 1, 100)


class AlertSettings(_Section):
    unreachable_after_failures: int = _count(3, 1, 10_000)
    stuck_after_seconds: float = _bounded(1800.0, 0.0, 30 * DAY_SECONDS)
    repeat_interval_seconds: float = _bounded(0.0, 0.0, 7 * DAY_SECONDS)


class StateSettings(_Section):
    path: Path | None = None
    """The SQLite file that keeps state across restarts (docs/state.md); None = memory only."""
    lock_wait_seconds: float = _bounded(15.0, 0.0, 600.0)
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
        """Per-endpoint ``add_if_missing`` wins over the global switch; only some providers'
        endpoints can be added (see ``ProviderSpec.can_be_added``)."""
        if not PROVIDERS[endpoint.cloud_provider].can_be_added:
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

    @property
    def secret_forms(self) -> list[str]:
        """The secret and its encoded forms (Basic auth...), for the log masker."""
        user = (
            self.login.client_id
            if isinstance(self.login, ServiceAccount)
            else self.login.public_key
        )
        return secret_forms(user, self.secret.get_secret_value())

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
    listener: ListenerSecurity = OPEN_LISTENER
    """What ``server.web_config_file`` asks of the listener, read with the rest."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """Usable, but worth an operator's attention: ``check`` prints them, ``run`` logs
        them at start and on every reload."""
        insecure: tuple[str, ...] = ()
        if self.config.atlas.insecure:
            insecure = (
                "atlas.base_url: plain http:// to another host, allowed by "
                "atlas.allow_insecure_http: the credentials cross the network in clear text",
            )
        return insecure + self.credentials.warnings


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
    listener = OPEN_LISTENER
    if config is not None and config.server.web_config_file is not None:
        try:
            listener = _load_listener(path.parent / config.server.web_config_file)
        except ConfigError as error:
            problems.extend(f"server.web_config_file: {problem}" for problem in error.problems)
    credentials, credential_problems = _credentials_from(env)
    problems.extend(credential_problems)
    if problems or config is None or credentials is None:
        raise ConfigError(problems)
    return Settings(config=config, credentials=credentials, source=path, listener=listener)


def _load_listener(path: Path) -> ListenerSecurity:
    raw = _read_yaml(path, field="")
    try:
        web_config = WebConfigFile.model_validate({} if raw is None else raw)
        return listener_security(web_config, path)
    except ValidationError as error:
        raise ConfigError(flatten_validation_error(error)) from None
    except WebConfigError as error:
        raise ConfigError(error.problems) from None


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
    if config.atlas.insecure and not config.atlas.allow_insecure_http:
        problems.append(
            f"atlas.base_url: plain http:// to {urlsplit(config.atlas.base_url).hostname} "
            "would send the credentials in clear text; use https://, or set "
            "atlas.allow_insecure_http: true (a simulator on another host, for instance)"
        )
    if not config.endpoints and not config.discover:
        problems.append("endpoints: give at least one endpoint, or a discover entry")
    if config.discover and not v2:
        problems.append("discover: needs atlas.api_version: v2")
    for index, endpoint in enumerate(config.endpoints):
        provider = endpoint.cloud_provider
        spec = PROVIDERS[provider]
        if not spec.served_by_v1 and not v2:
            problems.append(
                f"endpoints.{index}.cloud_provider: {provider} needs atlas.api_version: v2 "
                f"(v1.0 serves {provider_names(lambda each: each.served_by_v1)} only)"
            )
        if not spec.can_be_added and endpoint.add_if_missing:
            problems.append(
                f"endpoints.{index}.add_if_missing: only "
                f"{provider_names(lambda each: each.can_be_added)} endpoints can be added; "
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


MAX_CONFIG_BYTES = 10 * 1024 * 1024
"""A config of 10,000 endpoints is about 2 MB; a larger file is a mistake (or /dev/zero)."""
MAX_SECRET_FILE_BYTES = 64 * 1024

# What a path may be instead of a regular file, and how to say so.
_NOT_REGULAR_FILES = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_text_file(path: Path, max_bytes: int) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes``, or a ValueError saying
    why not (for "cannot read PATH: reason").

    Never blocks and never reads without bound: the kind of file is checked before it is
    opened (a FIFO would wait for a writer, /dev/zero never ends) and again on the open file
    (it may have been swapped meanwhile), which is opened non-blocking. The reason never
    quotes the file's bytes, which may be a secret's.
    """
    try:
        _check_regular(os.stat(path), max_bytes)
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(descriptor, "rb") as file:
            _check_regular(os.fstat(file.fileno()), max_bytes)
            data = file.read(max_bytes + 1)
    except OSError as error:
        raise ValueError(error.strerror or str(error)) from None
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes // 1024} KiB")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError("UTF-16 text (it starts with a byte order mark); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"not UTF-8 text (line {line} holds a byte UTF-8 does not allow: Latin-1, "
            "perhaps); save it as UTF-8"
        ) from None


def _check_regular(status: os.stat_result, max_bytes: int) -> None:
    for is_kind, kind in _NOT_REGULAR_FILES:
        if is_kind(status.st_mode):
            raise ValueError(f"not a regular file but {kind}")
    if not stat.S_ISREG(status.st_mode):
        raise ValueError("not a regular file")
    if status.st_size > max_bytes:
        raise ValueError(f"larger than {max_bytes // 1024} KiB ({status.st_size} bytes)")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML requires the keys of a mapping to be unique, but PyYAML lets the last one win
    silently: a second ``endpoints:`` block would leave the first list unmonitored."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[object, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *defaults" may be overridden: that is what it is for
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the SafeLoader reports it
            if first is not key_node.start_mark:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r}: first at line {first.line + 1}, again at line "
                    f"{key_node.start_mark.line + 1} (only one would count)",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, field: str = "--config: ") -> object:
    try:
        text = read_text_file(path, MAX_CONFIG_BYTES)
    except ValueError as error:
        raise ConfigError([f"{field}cannot read {path}: {error}"]) from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as error:
        where = ""
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            where = f" line {mark.line + 1}, column {mark.column + 1}"
        reason = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError([f"{path}:{where}: {reason}"]) from None
    except RecursionError:
        # PyYAML parses nested collections recursively: a few hundred levels exhaust the
        # interpreter's stack, far beyond any real config.
        raise ConfigError([f"{path}: nested too deeply to read"]) from None


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
    problems.extend(_user_name_problems(PUBLIC_KEY_ENV, public_key, PRIVATE_KEY_ENV))
    try:
        private_key, source, warnings = _secret_from(env, PRIVATE_KEY_ENV, PRIVATE_KEY_FILE_ENV)
    except ConfigError as error:
        return None, problems + error.problems
    if problems:
        return None, problems
    return Credentials(ApiKey(public_key, private_key), source, warnings), []


_NOT_IN_USER_NAMES = re.compile(r"[:\s\x00-\x1f\x7f]")


def _user_name_problems(name: str, value: str, secret_name: str) -> list[str]:
    """A public key or client id is the user of Digest or Basic auth, where a ':' ends it:
    one holding a ':' or a line break is most likely a pasted "public:private" pair, so the
    value is never shown."""
    if not _NOT_IN_USER_NAMES.search(value):
        return []
    return [
        f"env.{name}: holds a ':', a space or a control character (value not shown: it may "
        f"hold a pasted secret); give the id alone, and the secret in {secret_name}"
    ]


def _service_account_from(
    env: Mapping[str, str], client_id: str
) -> tuple[Credentials | None, list[str]]:
    problems = _user_name_problems(CLIENT_ID_ENV, client_id, CLIENT_SECRET_ENV)
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
        from_file = read_text_file(Path(key_file), MAX_SECRET_FILE_BYTES).strip()
        mode = Path(key_file).stat().st_mode
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
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
