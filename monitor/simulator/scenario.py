"""The scenario file: what the simulator serves when it starts, validated with every
problem named."""

from __future__ import annotations

import importlib.resources
import pathlib
from collections.abc import Sequence
from typing import Annotated, Any, NamedTuple, Protocol, Self, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitor.providers import PROVIDERS, CloudProvider
from monitor.simulator.faults import Fault
from monitor.simulator.ids import ObjectId


class ScenarioError(Exception):
    """A scenario that cannot be used; ``problems`` holds one ``path.to.field: problem`` each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def _describe_validation_error(error: ValidationError) -> list[str]:
    """Flatten pydantic's nested locations so operators can find the field in their file."""
    problems = []
    for detail in error.errors():
        context = detail.get("ctx", {})
        message = str(context["error"]) if "error" in context else detail["msg"]
        location = ".".join(str(part) for part in detail["loc"])
        problems.append(f"{location}: {message}" if location else message)
    return problems


class _Step(BaseModel):
    """A scripted change ``after_seconds`` after the simulator started.

    A step changes exactly the fields it names, so ``error_message: null`` clears a message
    while leaving it out keeps the current one; no other field may be null.
    """

    model_config = ConfigDict(extra="forbid")

    after_seconds: float = Field(ge=0)
    status: str | None = None
    error_message: str | None = None

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True, exclude={"after_seconds"})

    @model_validator(mode="after")
    def _check_changes(self) -> Self:
        changes = self.changes()
        if not changes:
            changeable = [name for name in type(self).model_fields if name != "after_seconds"]
            raise ValueError(f"a step must change at least one of {', '.join(changeable)}")
        nulls = sorted(
            name for name, value in changes.items() if value is None and name != "error_message"
        )
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null; leave it out to keep it")
        return self


class TimelineStep(_Step):
    """A scripted change of an endpoint."""

    delete_requested: bool | None = None
    exists: bool | None = None


class ServiceTimelineStep(_Step):
    """A scripted change of an endpoint service: its status and errorMessage only."""


_AnyStep = TypeVar("_AnyStep", bound=_Step)


def _in_time_order(steps: list[_AnyStep]) -> list[_AnyStep]:
    """Stable, so steps at the same instant apply in file order."""
    return sorted(steps, key=lambda step: step.after_seconds)


class EndpointKey(NamedTuple):
    """The store's key; an Azure id is in lower case (``ProviderSpec.comparable_id``)."""

    group_id: str
    private_link_id: str
    interface_endpoint_id: str
    cloud_provider: str = "AWS"

    def service(self) -> ServiceKey:
        return ServiceKey(self.group_id, self.cloud_provider, self.private_link_id)


class ServiceKey(NamedTuple):
    group_id: str
    cloud_provider: str
    service_id: str


class _EndpointRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_id: ObjectId
    private_link_id: ObjectId
    cloud_provider: CloudProvider = CloudProvider.AWS
    interface_endpoint_id: str

    @field_validator("interface_endpoint_id")
    @classmethod
    def _id_of_the_provider(cls, value: str, info: ValidationInfo) -> str:
        provider = info.data.get("cloud_provider")
        if provider is None:  # itself invalid, and reported as such
            return value
        return PROVIDERS[provider].endpoint_id.check(value)

    def key(self) -> EndpointKey:
        return EndpointKey(
            self.group_id,
            self.private_link_id,
            PROVIDERS[self.cloud_provider].comparable_id(self.interface_endpoint_id),
            self.cloud_provider.value,
        )


class ScenarioEndpoint(_EndpointRef):
    """An endpoint's state when the simulator starts, its timeline and its faults."""

    exists: bool = True
    status: str = "AVAILABLE"
    error_message: str | None = None
    delete_requested: bool = False
    timeline: Annotated[list[TimelineStep], AfterValidator(_in_time_order)] = []
    faults: list[Fault] = []


class ScenarioService(BaseModel):
    """An endpoint service (Atlas' side of a private link) and its timeline."""

    model_config = ConfigDict(extra="forbid")

    group_id: ObjectId
    id: ObjectId
    cloud_provider: CloudProvider = CloudProvider.AWS
    region: str | None = None
    """None: the provider's default region."""
    status: str = "AVAILABLE"
    error_message: str | None = None
    timeline: Annotated[list[ServiceTimelineStep], AfterValidator(_in_time_order)] = []

    def key(self) -> ServiceKey:
        return ServiceKey(self.group_id, self.cloud_provider.value, self.id)


class _Keyed(Protocol):
    def key(self) -> tuple[str, ...]: ...


_KeyedT = TypeVar("_KeyedT", bound=_Keyed)


def _without_duplicates(entries: list[_KeyedT]) -> list[_KeyedT]:
    first_index: dict[tuple[str, ...], int] = {}
    duplicates = []
    for index, entry in enumerate(entries):
        first = first_index.setdefault(entry.key(), index)
        if first != index:
            duplicates.append(f"entry {index} repeats entry {first} ({'/'.join(entry.key())})")
    if duplicates:
        raise ValueError("; ".join(duplicates))
    return entries


class Scenario(BaseModel):
    """Everything the simulator serves when it starts."""

    model_config = ConfigDict(extra="forbid")

    step_seconds: float = Field(default=10, gt=0)
    nonce_lifetime_seconds: float = Field(default=300, gt=0)
    token_lifetime_seconds: int = Field(default=3600, gt=0)
    rate_limit_per_minute: int | None = Field(default=None, gt=0)
    endpoint_services: list[ScenarioService] = []
    endpoints: list[ScenarioEndpoint] = []

    @field_validator("endpoints")
    @classmethod
    def _unique(cls, endpoints: list[ScenarioEndpoint]) -> list[ScenarioEndpoint]:
        return _without_duplicates(endpoints)

    @field_validator("endpoint_services")
    @classmethod
    def _unique_services(cls, services: list[ScenarioService]) -> list[ScenarioService]:
        return _without_duplicates(services)


def _parse_scenario(content: bytes, source: str) -> Scenario:
    """Bytes, so the YAML reader detects the encoding and reports bad bytes with a position."""
    try:
        document = yaml.safe_load(content)
    except yaml.YAMLError as error:
        raise ScenarioError([f"{source}: not valid YAML or JSON: {error}"]) from error
    if not isinstance(document, dict):
        kind = "empty" if document is None else f"a {type(document).__name__}"
        raise ScenarioError([f"{source}: a scenario must be a mapping, this one is {kind}"])
    try:
        return Scenario.model_validate(document)
    except ValidationError as error:
        raise ScenarioError(_describe_validation_error(error)) from error


def load_scenario(path: str | pathlib.Path) -> Scenario:
    """Read a YAML or JSON scenario file; every problem is reported at once."""
    path = pathlib.Path(path)
    try:
        content = path.read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise ScenarioError([f"{path}: cannot read scenario file: {reason}"]) from error
    return _parse_scenario(content, str(path))


def default_scenario() -> Scenario:
    """The demo scenario shipped in the package, whose ids the demo config refers to."""
    resource = importlib.resources.files("monitor.resources").joinpath("demo-scenario.yaml")
    return _parse_scenario(resource.read_bytes(), str(resource))
