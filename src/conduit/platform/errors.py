"""Errors carry their HTTP status; one set of handlers renders the RealWorld error shape.

Every error response is `{"errors": {"<field>": ["<message>", ...]}}`, so front ends can show
`<field> <message>` for each entry.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ConduitError(Exception):
    status_code = 400
    field = "body"
    message = "is invalid"
    # True when the request's writes so far must be committed even though it fails, such as
    # the revocation that answers a stolen token.
    keeps_changes = False

    def __init__(self, message: str | None = None, *, field: str | None = None) -> None:
        self.errors: dict[str, list[str]] = {field or self.field: [message or self.message]}
        super().__init__(self.errors)


class ValidationFailed(ConduitError):
    status_code = 422

    @classmethod
    def of(cls, errors: Mapping[str, Sequence[str]]) -> "ValidationFailed":
        error = cls()
        error.errors = {field: list(messages) for field, messages in errors.items()}
        return error


class Unauthorized(ConduitError):
    status_code = 401
    field = "token"
    message = "is missing or invalid"


class Forbidden(ConduitError):
    status_code = 403
    message = "is forbidden"


class NotFound(ConduitError):
    status_code = 404
    message = "not found"


def error_body(errors: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    return {"errors": {field: list(messages) for field, messages in errors.items()}}


def _validation_message(error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    context = error.get("ctx") or {}
    if kind == "missing":
        return "can't be blank"
    is_list = context.get("field_type") == "List"
    if kind in {"string_too_short", "too_short"} and not is_list:
        if context.get("min_length") == 1:
            return "can't be blank"
        return f"is too short (minimum is {context.get('min_length')} characters)"
    if kind in {"string_too_long", "too_long"} and not is_list:
        return f"is too long (maximum is {context.get('max_length')} characters)"
    if kind == "too_long":
        return f"has too many items (maximum is {context.get('max_length')})"
    if kind == "string_unicode":
        return "must be valid UTF-8 text"
    if kind in {"string_type", "string_sub_type"}:
        return "must be a string"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return "must be an integer"
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return "must be an object"
    if kind == "list_type":
        return "must be a list"
    if kind == "bool_type" or kind == "bool_parsing":
        return "must be true or false"
    if kind in {"greater_than_equal", "greater_than"}:
        return f"must be greater than or equal to {context.get('ge', context.get('gt'))}"
    if kind in {"less_than_equal", "less_than"}:
        return f"must be less than or equal to {context.get('le', context.get('lt'))}"
    if kind == "json_invalid":
        return f"is not valid JSON ({context.get('error', 'malformed')})"
    if kind == "string_pattern_mismatch":
        return "is invalid"
    if kind == "value_error":
        message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
        # email-validator explains at length; front ends show "<field> <message>".
        return "is invalid" if "email address" in message else message
    return str(error.get("msg", "is invalid"))


def _validation_field(location: Sequence[Any]) -> str:
    """The innermost named field: ("body", "user", "email") -> "email"; list indexes are skipped."""
    names = [part for part in location if isinstance(part, str)]
    if len(names) <= 1:
        return "body"
    return names[-1]


def validation_errors(errors: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    collected: dict[str, list[str]] = {}
    for error in errors:
        field = _validation_field(error.get("loc", ()))
        message = _validation_message(error)
        if message not in collected.setdefault(field, []):
            collected[field].append(message)
    return collected


def error_response(error: ConduitError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Token"} if error.status_code == 401 else None
    return JSONResponse(error_body(error.errors), status_code=error.status_code, headers=headers)


async def _conduit_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(cast(ConduitError, exc))


async def _request_validation_error(_: Request, exc: Exception) -> JSONResponse:
    exc = cast(RequestValidationError, exc)
    return JSONResponse(error_body(validation_errors(exc.errors())), status_code=422)


# FastAPI's answer to a body it cannot decode (bytes that are not UTF-8, numbers too long to
# convert): a 400 that is really the same client error as malformed JSON.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    exc = cast(StarletteHTTPException, exc)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
        return JSONResponse(error_body({"body": ["is not valid JSON"]}), status_code=422)
    message = {404: "not found", 405: "method not allowed"}.get(exc.status_code, str(exc.detail))
    return JSONResponse(
        error_body({"body": [message]}),
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


def _is_rejected_value(exc: DBAPIError) -> bool:
    """A value PostgreSQL refused (SQLSTATE class 22, "data exception": out of range, badly
    encoded...) or that the driver could not encode for it (asyncpg's DataError)."""
    cause = exc.orig.__cause__ if exc.orig is not None else None
    return _sqlstate(exc).startswith("22") or isinstance(cause, asyncpg.DataError)


def _sqlstate(exc: DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", "") or "")


# query_canceled: what PostgreSQL answers when DB_STATEMENT_TIMEOUT_MS runs out.
_QUERY_CANCELED = "57014"
_RETRY_AFTER_TIMEOUT_SECONDS = 5


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    exc = cast(DBAPIError, exc)
    if _sqlstate(exc) == _QUERY_CANCELED:
        # The request is valid but too costly for the time the database gives a statement
        # (a very deep offset, say): the server is what could not serve it, not the client.
        logger.warning("statement timeout on %s %s: %s", request.method, request.url.path, exc.orig)
        return JSONResponse(
            error_body(
                {
                    "database": [
                        "took too long to answer; retry later, or page with a cursor "
                        "instead of a deep offset"
                    ]
                }
            ),
            status_code=503,
            headers={"Retry-After": str(_RETRY_AFTER_TIMEOUT_SECONDS)},
        )
    if not _is_rejected_value(exc):
        raise exc
    # Validation should stop bad values before they reach PostgreSQL; this is the safety net
    # that keeps a value the database rejects a client error rather than a server one.
    logger.warning(
        "database rejected a value on %s %s: %s", request.method, request.url.path, exc.orig
    )
    return JSONResponse(error_body({"body": ["contains a value that is not allowed"]}), 422)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ConduitError, _conduit_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
