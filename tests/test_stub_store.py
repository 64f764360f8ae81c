"""The in-memory collection: positions, unique keys, groups, keyset pages, threads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upstream_stub.store import Collection, Duplicate


@dataclass(frozen=True, slots=True)
class Thing:
    id: str
    created_us: int
    key: str = ""
    owner: str | None = None


def named(name: str) -> Callable[[int], Thing]:
    """A maker for Collection.insert: the record `name` at the time it is given."""
    return lambda created: Thing(name, created, key=name)


def things(count: int, owner: str | None = None) -> list[Thing]:
    return [Thing(f"t{n:04d}", 1_000 + n, key=f"k{n}", owner=owner) for n in range(count)]


def test_page_is_newest_first_and_says_whether_more_remain() -> None:
    collection = Collection[Thing]()
    collection.load(things(5))
    first = collection.page(2)
    assert [t.id for t in first.items] == ["t0004", "t0003"]
    assert first.has_more
    last = first.items[-1]
    second = collection.page(2, before=(last.created_us, last.id))
    assert [t.id for t in second.items] == ["t0002", "t0001"]
    assert second.has_more
    third = collection.page(2, before=(1_001, "t0001"))
    assert [t.id for t in third.items] == ["t0000"]
    assert not third.has_more


def test_an_exact_fit_has_no_more() -> None:
    collection = Collection[Thing]()
    collection.load(things(4))
    assert not collection.page(4).has_more
    assert collection.page(3).has_more


def test_same_time_is_ordered_by_id() -> None:
    collection = Collection[Thing]()
    collection.load([Thing("b", 5), Thing("a", 5), Thing("c", 5)])
    assert [t.id for t in collection.page(10).items] == ["c", "b", "a"]
    assert [t.id for t in collection.page(10, before=(5, "b")).items] == ["a"]


def test_a_cursor_of_a_deleted_item_still_works() -> None:
    collection = Collection[Thing]()
    collection.load(things(5))
    assert collection.delete("t0002")
    assert [t.id for t in collection.page(5, before=(1_002, "t0002")).items] == ["t0001", "t0000"]


def test_insert_is_always_newer_than_everything_even_with_a_clock_behind() -> None:
    collection = Collection[Thing](clock=lambda: 0)
    collection.load(things(3))
    first = collection.insert(lambda created: Thing("new1", created))
    second = collection.insert(lambda created: Thing("new2", created))
    assert first.created_us == 1_003
    assert second.created_us == 1_004
    assert [t.id for t in collection.page(2).items] == ["new2", "new1"]


def test_insert_follows_the_clock_when_it_is_ahead() -> None:
    collection = Collection[Thing](clock=lambda: 10**15)
    collection.load(things(3))
    assert collection.insert(lambda created: Thing("n", created)).created_us == 10**15


def test_insert_must_use_the_given_time() -> None:
    collection = Collection[Thing]()
    with pytest.raises(ValueError):
        collection.insert(lambda created: Thing("n", created - 1))


def test_ids_are_unique() -> None:
    collection = Collection[Thing]()
    collection.load(things(1))
    with pytest.raises(ValueError):
        collection.load([Thing("t0000", 99)])


def test_unique_key_refuses_duplicates_on_insert_and_replace() -> None:
    collection = Collection[Thing](unique=lambda t: t.key)
    collection.load(things(2))
    with pytest.raises(Duplicate) as caught:
        collection.insert(lambda created: Thing("x", created, key="k0"))
    assert caught.value.value == "k0"
    assert len(collection) == 2
    with pytest.raises(Duplicate):
        collection.replace("t0001", lambda t: replace(t, key="k0"))
    assert collection.find_unique("k1") == things(2)[1]


def test_replace_moves_the_unique_key_and_delete_frees_it() -> None:
    collection = Collection[Thing](unique=lambda t: t.key)
    collection.load(things(2))
    changed = collection.replace("t0001", lambda t: replace(t, key="fresh"))
    assert changed is not None and changed.key == "fresh"
    assert collection.find_unique("k1") is None
    assert collection.find_unique("fresh") == changed
    assert collection.delete("t0001")
    assert collection.find_unique("fresh") is None
    collection.insert(lambda created: Thing("again", created, key="fresh"))


def test_replace_keeps_position_and_moves_groups() -> None:
    collection = Collection[Thing](group=lambda t: t.owner)
    collection.load(things(3, owner="a"))
    with pytest.raises(ValueError):
        collection.replace("t0000", lambda t: replace(t, created_us=1))
    moved = collection.replace("t0001", lambda t: replace(t, owner="b"))
    assert moved is not None and moved.owner == "b"
    assert [t.id for t in collection.page(5, group="a").items] == ["t0002", "t0000"]
    assert [t.id for t in collection.page(5, group="b").items] == ["t0001"]
    assert collection.replace("missing", lambda t: t) is None

    # A change that raises (a caller's check under the lock) moves nothing.
    def refuse(thing: Thing) -> Thing:
        raise LookupError(thing.id)

    with pytest.raises(LookupError):
        collection.replace("t0001", refuse)
    assert collection.get("t0001") == moved
    assert [t.id for t in collection.page(5, group="b").items] == ["t0001"]


def test_records_can_be_listed_under_several_groups() -> None:
    collection = Collection[Thing](groups=lambda t: (f"tenant:{t.key}", f"owner:{t.owner}"))
    collection.load(
        [
            Thing("t1", 1, key="x", owner="ann"),
            Thing("t2", 2, key="y", owner="ann"),
            Thing("t3", 3, key="x", owner="bob"),
        ]
    )
    assert [t.id for t in collection.page(5, group="tenant:x").items] == ["t3", "t1"]
    assert [t.id for t in collection.page(5, group="owner:ann").items] == ["t2", "t1"]
    collection.replace("t1", lambda t: replace(t, key="y"))
    assert [t.id for t in collection.page(5, group="tenant:x").items] == ["t3"]
    assert [t.id for t in collection.page(5, group="tenant:y").items] == ["t2", "t1"]
    assert collection.delete("t2")
    assert [t.id for t in collection.page(5, group="owner:ann").items] == ["t1"]
    assert [t.id for t in collection.page(5, group="tenant:y").items] == ["t1"]
    with pytest.raises(ValueError):
        Collection[Thing](group=lambda t: t.owner, groups=lambda t: ())


def test_delete_where_removes_only_a_record_that_qualifies() -> None:
    collection = Collection[Thing](group=lambda t: t.owner)
    collection.load(things(2, owner="a"))
    assert not collection.delete("t0000", where=lambda t: t.owner == "b")
    assert collection.get("t0000") is not None
    assert [t.id for t in collection.page(5, group="a").items] == ["t0001", "t0000"]
    assert collection.delete("t0000", where=lambda t: t.owner == "a")
    assert collection.get("t0000") is None
    assert not collection.delete("missing", where=lambda t: True)


def test_groups_page_only_their_members() -> None:
    collection = Collection[Thing](group=lambda t: t.owner)
    collection.load([Thing(f"t{n}", n, owner="a" if n % 3 == 0 else "b") for n in range(10)])
    page = collection.page(2, group="a")
    assert [t.id for t in page.items] == ["t9", "t6"]
    assert page.has_more
    rest = collection.page(5, before=(6, "t6"), group="a")
    assert [t.id for t in rest.items] == ["t3", "t0"]
    assert not rest.has_more
    assert collection.page(5, group="nobody").items == []
    assert collection.delete("t9")
    assert [t.id for t in collection.page(1, group="a").items] == ["t6"]


def test_group_paging_needs_a_grouped_collection() -> None:
    with pytest.raises(ValueError):
        Collection[Thing]().page(1, group="a")


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Collection[Thing]().page(0)


def test_delete_and_get() -> None:
    collection = Collection[Thing]()
    collection.load(things(2))
    assert collection.get("t0000") == things(2)[0]
    assert collection.delete("t0000")
    assert not collection.delete("t0000")
    assert collection.get("t0000") is None
    assert len(collection) == 1


def test_concurrent_inserts_get_distinct_increasing_positions() -> None:
    collection = Collection[Thing](unique=lambda t: t.key, clock=lambda: 5)
    barrier = threading.Barrier(8)

    def worker(number: int) -> None:
        barrier.wait()
        for index in range(200):
            name = f"w{number}-{index}"
            collection.insert(named(name))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    items = collection.page(10_000).items
    assert len(items) == 1_600
    times = [t.created_us for t in items]
    assert times == sorted(set(times), reverse=True)


@settings(max_examples=150, deadline=None, database=None)
@given(
    initial=st.integers(min_value=0, max_value=40),
    clock_behind=st.booleans(),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=8),  # page size
            st.integers(min_value=0, max_value=3),  # inserts after this page
            st.lists(st.integers(min_value=0, max_value=39), max_size=2),  # deletes
        ),
        min_size=1,
        max_size=30,
    ),
)
def test_keyset_walk_meets_each_initial_item_once(
    initial: int, clock_behind: bool, steps: list[tuple[int, int, list[int]]]
) -> None:
    """Inserts never show up in a walk begun before them, and nothing repeats.

    With the clock behind the seeded data, new positions come from the
    "later than everything so far" rule alone.
    """
    now = 0 if clock_behind else 10**16
    collection = Collection[Thing](clock=lambda: now)
    # Seeded like the stub's: spread out, several sharing one instant.
    collection.load(Thing(f"s{n:03d}", 1_000 * (n // 3), owner=None) for n in range(initial))
    at_start = {t.id for t in collection.page(10**6).items}
    deleted: set[str] = set()
    seen: list[str] = []
    before = None
    for step in range(initial + 2):
        limit, inserts, deletes = steps[step % len(steps)]
        page = collection.page(limit, before=before)
        seen += [t.id for t in page.items]
        for number in range(inserts):
            collection.insert(named(f"n{step}-{number}"))
        for index in deletes:
            if index < initial and collection.delete(f"s{index:03d}"):
                deleted.add(f"s{index:03d}")
        if not page.has_more:
            break
        last = page.items[-1]
        before = (last.created_us, last.id)
    else:
        pytest.fail("the walk does not end")
    assert len(seen) == len(set(seen))
    assert at_start - deleted <= set(seen) <= at_start
