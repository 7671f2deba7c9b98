"""Scripted misbehaviour: the ``Fault`` a scenario or a test arms, and how it replaces an answer."""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Literal, Self

from aiohttp import hdrs, web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from monitor.simulator.http import _AtlasError, _default_error_code


def _standard_http_status(value: int) -> int:
    """Fault answers need a reason phrase and a default errorCode, so only known codes."""
    try:
        HTTPStatus(value)
    except ValueError:
        raise ValueError(f"{value} is not a standard HTTP status code") from None
    return value


class Fault(BaseModel):
    """A scripted misbehaviour for requests that reach one endpoint.

    A fault that names nothing but ``methods``/``times`` lets matching requests through
    untouched; placed first in a list it delays the faults behind it by ``times`` requests.

    aiohttp clients resend a GET or DELETE once when the server drops the connection, so a
    client only sees a dropped GET when ``times`` is at least 2 (or unlimited).
    """

    model_config = ConfigDict(extra="forbid")

    methods: list[Literal["GET", "POST", "DELETE"]] = Field(
        default=["GET", "POST", "DELETE"], min_length=1
    )
    times: int | None = Field(default=None, ge=1)
    latency_seconds: float = Field(default=0, ge=0)
    status: Annotated[int, AfterValidator(_standard_http_status)] | None = Field(
        default=None, ge=200, le=599
    )
    error_code: str | None = None
    retry_after: int | None = Field(default=None, ge=0)
    drop_connection: bool = False
    truncate_body: bool = False
    """Send the answer's headers and half its body, then close the connection."""
    body: str | None = None
    content_type: str = "application/json"

    @model_validator(mode="after")
    def _check_combination(self) -> Self:
        named = self.model_fields_set
        if self.drop_connection:
            answer_fields = sorted(
                named
                & {"status", "error_code", "retry_after", "body", "content_type", "truncate_body"}
            )
            if answer_fields:
                raise ValueError(
                    "drop_connection sends no answer, so it cannot be combined with "
                    + ", ".join(answer_fields)
                )
        if self.body is None:
            if "content_type" in named:
                raise ValueError("content_type only applies to a raw body")
            if self.status is not None and self.status < HTTPStatus.BAD_REQUEST:
                raise ValueError("a status below 400 needs a raw body")
            if self.error_code is not None and self.status is None:
                raise ValueError("error_code needs a status")
        elif self.error_code is not None:
            raise ValueError("error_code cannot be combined with a raw body")
        return self


@dataclass
class _ArmedFault:
    fault: Fault
    remaining: int | None


def _fault_answer(request: web.Request, fault: Fault) -> web.Response | None:
    """The answer a fault replaces the real one with, or None to answer normally."""
    if fault.body is not None:
        return web.Response(
            status=HTTPStatus.OK if fault.status is None else fault.status,
            body=fault.body.encode(),
            headers={hdrs.CONTENT_TYPE: fault.content_type},
        )
    if fault.status is None:
        return None
    error = _AtlasError(
        fault.status,
        fault.error_code or _default_error_code(fault.status),
        f"Simulated fault for {request.method} {request.path}.",
    )
    return error.response(request)


async def _send_truncated(request: web.Request, answer: web.Response) -> web.StreamResponse:
    """The answer's status and headers, announcing its whole length, then half its body and
    a closed connection: what a client sees when a connection is reset mid-body."""
    body = answer.body
    assert isinstance(body, bytes)
    response = web.StreamResponse(status=answer.status, reason=answer.reason)
    response.headers.update(answer.headers)
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    request.protocol.force_close()
    return response
