"""The reference deployment's cache across its gunicorn workers.

routes.yaml keeps each caller's reads of a user for 10 s in each worker's memory. A
write served by one worker must drop the user's kept answers in every worker: a
client that reads its own change must never get the answer from before it from
another worker. Each worker keeps its own copy, so a `stored` answer names a worker
that did not have one: reading until two copies were stored proves both workers
held the old answer when the write came.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from .stack_support import ReferenceStack, StackClient, unique_email
from .support import Reply

pytestmark = pytest.mark.integration

MAX_READS = 400  # bound on the reads that look for both workers
BATCH = 8  # concurrent reads: connections spread over the workers


@pytest.fixture(scope="module")
def reference_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReferenceStack]:
    """A stack of this module's own: its reads would use up the shared stack's
    100/minute per caller on users.get."""
    stack = ReferenceStack.start(
        tmp_path_factory.mktemp("cache-workers"), RATE_LIMIT_USERS_GET="100000/minute"
    )
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def api(reference_stack: ReferenceStack) -> StackClient:
    return reference_stack.client()


@pytest.fixture
def own_user(reference_stack: ReferenceStack, api: StackClient) -> Iterator[str]:
    admin = reference_stack.logins["admin"]
    created = api.post_json(
        "/api/v1/users",
        {"email": unique_email("cache-workers"), "name": "Wanda Worker"},
        [admin.bearer],
    )
    assert created.status == 201, created.describe()
    user_id: str = created.json()["id"]
    yield user_id
    api.request("DELETE", f"/api/v1/users/{user_id}", [admin.bearer])


def read_until_both_workers_stored(
    api: StackClient, path: str, headers: list[tuple[str, str]]
) -> list[Reply]:
    """Concurrent reads until two answers were `stored` (each worker once)."""
    replies: list[Reply] = []
    with ThreadPoolExecutor(BATCH) as pool:
        while len(replies) < MAX_READS:
            replies += pool.map(lambda _: api.get(path, headers), range(BATCH))
            if sum("stored" in (r.header("Cache-Status") or "") for r in replies) >= 2:
                return replies
    pytest.fail(f"the reads of {path} never reached both workers in {MAX_READS} tries")


def test_a_write_in_one_worker_drops_the_answers_of_every_worker(
    reference_stack: ReferenceStack, api: StackClient, own_user: str
) -> None:
    admin = reference_stack.logins["admin"]
    path = f"/api/v1/users/{own_user}"
    before = read_until_both_workers_stored(api, path, [admin.bearer])
    assert {r.status for r in before} == {200}
    assert {r.json()["name"] for r in before} == {"Wanda Worker"}
    # The others were served from a copy: a hit, or a wait for the worker's one fetch.
    served = [
        r.header("Cache-Status") or ""
        for r in before
        if "stored" not in (r.header("Cache-Status") or "")
    ]
    assert served and all(s.startswith("gateway; hit") or s.endswith("collapsed") for s in served)

    new_name = f"Renamed {uuid.uuid4().hex[:8]}"
    changed = api.send_json("PATCH", path, {"name": new_name}, [admin.bearer])
    assert changed.status == 200, changed.describe()

    after = read_until_both_workers_stored(api, path, [admin.bearer])
    stale = [r.describe() for r in after if r.json()["name"] != new_name]
    assert not stale, f"{len(stale)} reads after the write got the old answer: {stale[0]}"
    # Each worker fetched the user again once; every other read was its kept copy.
    stored = [r for r in after if "stored" in (r.header("Cache-Status") or "")]
    assert len(stored) == 2
