"""Small rules about response header fields that several steps share."""

from __future__ import annotations

from werkzeug.wrappers import Response


def add_vary(response: Response, *names: str) -> None:
    """Add to Vary, keeping every token of every Vary line the response already has
    (werkzeug's response.vary reads only the first line)."""
    tokens: list[str] = []
    for line in response.headers.getlist("Vary"):
        tokens += [t.strip() for t in line.split(",") if t.strip()]
    lowered = {t.lower() for t in tokens}
    tokens += [n for n in names if n.lower() not in lowered]
    response.headers["Vary"] = ", ".join(tokens)


# Set on a composed route's partial answer, naming the parts that failed.
PARTIAL_HEADER = "Gateway-Partial"
