"""API versions: the upstream path chosen by a request header, and deprecation notices.

Header versioning (`versions:` on a route): the version named in Accept-Version (or
the route's own header) picks the upstream path; absent, the default applies; an
unknown one is a 400 listing the versions there are. Deprecated versions, by URL or
by header, answer with Deprecation (RFC 9745), Sunset (RFC 8594) and a Link to
their successor (rel="successor-version", RFC 5829).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import quote

from werkzeug.http import http_date
from werkzeug.wrappers import Response

from gateway.config.model import Deprecation, Versions
from gateway.context import RequestContext
from gateway.headers import add_vary
from gateway.paths import PathTemplate
from gateway.problems import UnsupportedVersion


@dataclass(frozen=True, slots=True)
class DeprecationNotice:
    """Deprecation headers prepared once: the successor may need the route's params."""

    deprecation: str
    sunset: str | None
    successor: PathTemplate | str | None

    @classmethod
    def of(cls, deprecation: Deprecation) -> DeprecationNotice:
        successor: PathTemplate | str | None = deprecation.successor
        if isinstance(successor, str) and successor.startswith("/"):
            successor = PathTemplate.parse(successor)
        return cls(
            deprecation=f"@{calendar.timegm(deprecation.since.utctimetuple())}",
            sunset=http_date(deprecation.sunset) if deprecation.sunset else None,
            successor=successor,
        )

    def apply(self, ctx: RequestContext, response: Response) -> None:
        response.headers["Deprecation"] = self.deprecation
        if self.sunset:
            response.headers["Sunset"] = self.sunset
        if self.successor is not None:
            if isinstance(self.successor, PathTemplate):
                try:
                    target = ctx.public_base + self.successor.expand(ctx.params)
                except (KeyError, ValueError):
                    return
            else:
                target = self.successor
            response.headers.add(
                "Link", f'<{quote(target, safe=":/?&=%#@!$,;~+*()")}>; rel="successor-version"'
            )


@dataclass(frozen=True, slots=True)
class _Option:
    upstream: PathTemplate
    notice: DeprecationNotice | None


class ChooseVersion:
    """Header versioning: pick the upstream path for the requested version."""

    ORDER: ClassVar[int] = 60

    def __init__(self, versions: Versions) -> None:
        self.header = versions.header
        self.default = versions.default
        self.options = {
            option.name: _Option(
                PathTemplate.parse(option.upstream_path),
                DeprecationNotice.of(option.deprecation) if option.deprecation else None,
            )
            for option in versions.options
        }
        self.names = sorted(self.options)

    def on_request(self, ctx: RequestContext) -> Response | None:
        requested = ctx.request.headers.get(self.header, "").strip() or self.default
        option = self.options.get(requested)
        if option is None:
            raise UnsupportedVersion(
                f"Version {requested[:32]!r} is not supported; supported: {', '.join(self.names)}.",
                supported=self.names,
            )
        ctx.version = requested
        ctx.upstream_template = option.upstream
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        # The answer depends on the version header: caches must key on it.
        add_vary(response, self.header)
        option = self.options.get(ctx.version or "")
        if option is not None and option.notice is not None:
            option.notice.apply(ctx, response)
        return response


class AnnounceDeprecation:
    """URL versioning: a route that is itself a deprecated version."""

    ORDER: ClassVar[int] = 60

    def __init__(self, deprecation: Deprecation) -> None:
        self.notice = DeprecationNotice.of(deprecation)

    def on_request(self, ctx: RequestContext) -> Response | None:
        return None

    def on_response(self, ctx: RequestContext, response: Response) -> Response:
        self.notice.apply(ctx, response)
        return response
