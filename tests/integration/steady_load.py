"""A steady load from a process of its own, for tests that change the server under it.

    python tests/integration/steady_load.py --port P --path /x --until STOPFILE --out F

Some threads, each on one keep-alive connection, send GET requests in a loop until the
stop file appears (or a time limit passes), then write one JSON object to F: the count
of answers by status, the errors, and how often a connection was found closed.

A client may retry an idempotent request once when the server closed a persistent
connection before sending any of the response (RFC 9112 §9.3.1): a server that stops
gracefully closes its idle connections, and a request can cross that close on the wire.
Such retries are counted apart (`reconnects`); any other failure is an error.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from collections import Counter
from pathlib import Path

TIME_LIMIT_SECONDS = 120.0


def run(port: int, path: str, threads: int, until: Path, pause: float) -> dict[str, object]:
    statuses: Counter[int] = Counter()
    errors: list[str] = []
    reconnects = [0]
    lock = threading.Lock()
    ends = time.monotonic() + TIME_LIMIT_SECONDS

    def client() -> None:
        conn: http.client.HTTPConnection | None = None
        served = 0  # answers read on the current connection
        while not until.exists() and time.monotonic() < ends:
            for attempt in (1, 2):
                if conn is None:
                    conn, served = http.client.HTTPConnection("127.0.0.1", port, timeout=10), 0
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    response.read()
                    served += 1
                    with lock:
                        statuses[response.status] += 1
                    if response.getheader("Connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (
                    http.client.RemoteDisconnected,
                    ConnectionResetError,
                    BrokenPipeError,
                ) as exc:
                    conn.close()
                    conn = None
                    if served and attempt == 1:  # a kept-alive connection the server closed
                        with lock:
                            reconnects[0] += 1
                        continue
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    break
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()
                    conn = None
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    break
            time.sleep(pause)
        if conn is not None:
            conn.close()

    workers = [threading.Thread(target=client, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIME_LIMIT_SECONDS + 30)
    return {
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "reconnects": reconnects[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--pause", type=float, default=0.005)
    parser.add_argument("--until", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    a = parser.parse_args()
    result = run(a.port, a.path, a.threads, a.until, a.pause)
    a.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
