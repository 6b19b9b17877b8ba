"""NUL characters are refused in every text a request carries, in one place.

PostgreSQL cannot store U+0000 in a text or JSON column (it raises a DataError deep inside a
write, after the request was accepted), and no tenant text needs one. Rather than a validator
on every schema field, one app-wide dependency walks what the request sent (the JSON body, form
fields, query and path parameters) and answers a 422 naming the first field that has one
(400 on `/v1`, as OpenAI answers every invalid request).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from backend.errors import Invalid

NUL = "\x00"
_JSON = ("application/json",)
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


Path = tuple[str | int, ...]


def field_name(path: Path) -> str:
    """`messages[0].content`: how the API names a field (as OpenAI's `param` does)."""
    name = ""
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else part)
    return name or "body"


def find_nul(value: Any, path: Path = ()) -> Path | None:
    """The path of the first string (or object key) in a decoded JSON value holding a NUL."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if NUL in str(key):
                return (*path, str(key).replace(NUL, "\\u0000"))
            found = find_nul(item, (*path, str(key)))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, (*path, index))
            if found is not None:
                return found
    return None


def _refuse(path: Path) -> Invalid:
    name = field_name(path)
    return Invalid(f"{name}: text must not contain NUL characters (\\u0000)", param=name)


def _pairs(request: Request) -> Iterator[tuple[str, str]]:
    yield from request.query_params.multi_items()
    yield from ((name, str(value)) for name, value in request.path_params.items())


async def refuse_nul(request: Request) -> None:
    """App-wide dependency: raises Invalid naming the field that carries a NUL."""
    for name, value in _pairs(request):
        if NUL in name or NUL in value:
            raise _refuse((name.replace(NUL, "\\u0000"),))
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _JSON or content_type.endswith("+json"):
        # FastAPI parsed the body already for routes that take one; this reads the cached
        # value. A body that is not JSON is the route's own error to report.
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        found = find_nul(body)
        if found is not None:
            raise _refuse(found)
    elif content_type in _FORMS:
        form = await request.form()  # parsed (and size-limited) before dependencies run
        for field, item in form.multi_items():
            if NUL in field or (not isinstance(item, UploadFile) and NUL in item):
                raise _refuse((field.replace(NUL, "\\u0000"),))
