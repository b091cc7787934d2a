"""The answers to remote requests as the uplink publishes them on ``cmd/response`` (JSON), each committed to the
outbox with its audit entry by the intake (``gateway.mapek.intake``).

Every request gets an ``accepted`` or ``rejected`` answer, and an accepted one a second answer with its outcome:
``done``, ``rejected`` (the envelope refused) or ``failed``. The typed codes (``Rejection.code``,
``RemoteOutcome.code``) become the response's ``code`` here and nowhere before.
"""

from __future__ import annotations

from gateway.domain.messages import (
    STREAM_COMMAND_RESPONSES,
    MessageKind,
    NewMessage,
    Priority,
    command_response_body,
    remote_outcome_item,
)
from gateway.domain.remote import Rejection, RemoteOutcome, RemoteRequest, RemoteStatus, printable


class JsonCommandResponses:
    """The ``CommandResponses`` port for the JSON ``cmd/response`` topic."""

    def accepted(self, request: RemoteRequest, *, at: float) -> NewMessage:
        return _response(command_response_body(request.id, "accepted", at=at, kind=request.kind.value))

    def rejected(self, rejection: Rejection, *, at: float) -> NewMessage:
        body = command_response_body(
            rejection.request_id,
            "rejected",
            at=at,
            code=rejection.code,
            reason=rejection.reason,
            kind=rejection.kind,
        )
        return _response(body)

    def outcome(self, request: RemoteRequest, outcome: RemoteOutcome, *, at: float) -> NewMessage:
        body = command_response_body(
            request.id,
            outcome.status.value,
            at=at,
            code=outcome.code,
            reason=printable(outcome.detail) if outcome.status is not RemoteStatus.DONE else "",
            kind=request.kind.value,
            outcome=remote_outcome_item(outcome),
        )
        return _response(body)


def _response(body: bytes) -> NewMessage:
    return NewMessage(STREAM_COMMAND_RESPONSES, MessageKind.COMMAND_RESPONSE, Priority.COMMAND_RESPONSE, body)
