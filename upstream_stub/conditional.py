"""Conditional requests (RFC 9110 §13): strong ETags, 304 Not Modified, 412.

A single resource's ETag is a hash of its JSON representation, so it changes
whenever what a GET answers changes, and the v1 and v2 views of one order (two
representations) have different ETags. Reads carry it with `Cache-Control: private,
max-age=10` (the answer depends on the caller's identity headers).

Preconditions are evaluated in RFC 9110 §13.2.2's order, after the checks that would
answer 403 or 404 anyway and before the request content is looked at:

- If-Match (strong comparison; `*` matches any current representation): when it does
  not match, 412 `precondition_failed`, and nothing changes.
- If-None-Match (weak comparison; `*` matches any): when it matches, a GET or HEAD
  is 304 with the ETag and Cache-Control and no body; any other method is 412.

Without either header a request is unconditional, as before: 428 (Precondition
Required) is never demanded. Writes check If-Match again under the store's lock, so
two clients holding the same ETag cannot both change the record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import Response, jsonify, request

from upstream_stub.problems import Problem

CACHE_CONTROL = "private, max-age=10"


def entity_tag(representation: dict[str, Any]) -> str:
    """The opaque (unquoted) strong ETag of a JSON representation."""
    canonical = json.dumps(representation, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _precondition_failed(detail: str) -> Problem:
    return Problem(412, detail, code="precondition_failed")


def check_preconditions(tag: str) -> bool:
    """Evaluates If-Match and If-None-Match against the current `tag`.

    Raises a 412 Problem when a precondition fails; returns True when a GET or HEAD
    is to be answered 304 Not Modified, False to go on with the request.
    """
    if "If-Match" in request.headers and not request.if_match.contains(tag):
        raise _precondition_failed(
            "If-Match does not match the current ETag: the resource has changed "
            "(or the tag is weak); read it again and retry."
        )
    if "If-None-Match" in request.headers and request.if_none_match.contains_weak(tag):
        if request.method in ("GET", "HEAD"):
            return True
        raise _precondition_failed("If-None-Match matches the current ETag.")
    return False


def representation_response(representation: dict[str, Any]) -> Response:
    """The 200 answer to a GET of one resource, or its 304 (or a 412 raised)."""
    tag = entity_tag(representation)
    if check_preconditions(tag):
        response = Response(status=304)
        # A 304 has no content: no Content-Type to describe it.
        del response.headers["Content-Type"]
    else:
        response = jsonify(representation)
    response.set_etag(tag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response
