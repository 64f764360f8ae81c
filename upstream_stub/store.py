"""A thread-safe in-memory collection with keyset (newest-first) paging.

The stub runs one gunicorn worker with several threads, so every read and write
goes through one lock per collection. Records are immutable; an update replaces
the record, so a reader never sees one half-written.

Every record has a position (created_us, id). New records get a created_us strictly
greater than every position ever handed out, so a client paging newest-first with
"strictly older than my last item" cursors meets each item that existed when it
started exactly once, however many are inserted meanwhile.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

Position = tuple[int, str]  # (created_us, id): the sort key, ascending in storage


class Record(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def created_us(self) -> int: ...


R = TypeVar("R", bound=Record)


class Duplicate(Exception):
    """A unique value (e.g. an email) that another record already holds."""

    def __init__(self, value: str) -> None:
        super().__init__(value)
        self.value = value


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    items: list[R]
    has_more: bool


def _position(record: Record) -> Position:
    return (record.created_us, record.id)


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class Collection(Generic[R]):
    """Records by id, kept in position order, with an optional unique key and groups.

    unique: a value no two records may share (compared as given).
    group: a value records are also listed by (e.g. an order's owner), so a
    member's page costs as little as an admin's.
    groups: several such values per record (e.g. an order's tenant, and its tenant
    and owner together), for collections listed more than one way.
    """

    def __init__(
        self,
        *,
        unique: Callable[[R], str] | None = None,
        group: Callable[[R], str | None] | None = None,
        groups: Callable[[R], Iterable[str]] | None = None,
        clock: Callable[[], int] = wall_clock_us,
    ) -> None:
        if group is not None and groups is not None:
            raise ValueError("give group or groups, not both")
        self._lock = threading.Lock()
        self._unique_of = unique
        self._groups_of = _one_group(group) if group is not None else _groups(groups)
        self._clock = clock
        self._by_id: dict[str, R] = {}
        self._positions: list[Position] = []
        self._groups: dict[str, list[Position]] = {}
        self._unique: dict[str, str] = {}
        self._latest_us = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)

    def load(self, records: Iterable[R]) -> None:
        """Adds records that already have their positions (seed data)."""
        with self._lock:
            for record in records:
                self._add(record)

    def insert(self, make: Callable[[int], R]) -> R:
        """Adds make(created_us), created_us later than every position so far."""
        with self._lock:
            created_us = max(self._clock(), self._latest_us + 1)
            record = make(created_us)
            if record.created_us != created_us:
                raise ValueError("a new record must take the created_us it is given")
            self._add(record)
            return record

    def get(self, record_id: str) -> R | None:
        with self._lock:
            return self._by_id.get(record_id)

    def find_unique(self, value: str) -> R | None:
        with self._lock:
            record_id = self._unique.get(value)
            return self._by_id.get(record_id) if record_id is not None else None

    def replace(self, record_id: str, change: Callable[[R], R]) -> R | None:
        """Swaps a record for change(record); its id and position must stay.

        change runs under the lock, so it sees the record as it is; an exception it
        raises leaves the record unchanged. A record whose groups change is listed
        under its new groups from then on.
        """
        with self._lock:
            old = self._by_id.get(record_id)
            if old is None:
                return None
            new = change(old)
            if _position(new) != _position(old):
                raise ValueError("a replacement must keep the record's id and position")
            if self._unique_of is not None:
                old_value, new_value = self._unique_of(old), self._unique_of(new)
                if new_value != old_value:
                    if new_value in self._unique:
                        raise Duplicate(new_value)
                    del self._unique[old_value]
                    self._unique[new_value] = record_id
            if self._groups_of is not None:
                old_groups, new_groups = self._groups_of(old), self._groups_of(new)
                position = _position(old)
                for name in old_groups - new_groups:
                    _remove(self._groups[name], position)
                for name in new_groups - old_groups:
                    bisect.insort(self._groups.setdefault(name, []), position)
            self._by_id[record_id] = new
            return new

    def delete(self, record_id: str, where: Callable[[R], bool] | None = None) -> bool:
        """Removes a record, if there is one and where(record) holds (checked under
        the lock, so a record changed meanwhile is judged as it is now)."""
        with self._lock:
            record = self._by_id.get(record_id)
            if record is None or (where is not None and not where(record)):
                return False
            del self._by_id[record_id]
            position = _position(record)
            _remove(self._positions, position)
            for name in self._groups_of(record) if self._groups_of is not None else ():
                _remove(self._groups[name], position)
            if self._unique_of is not None:
                del self._unique[self._unique_of(record)]
            return True

    def page(
        self, limit: int, *, before: Position | None = None, group: str | None = None
    ) -> Page[R]:
        """Up to `limit` records, newest first, strictly older than `before`.

        With `group`, only that group's records (an unknown group is empty).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        with self._lock:
            if group is None:
                positions = self._positions
            else:
                if self._groups_of is None:
                    raise ValueError("this collection has no groups")
                positions = self._groups.get(group, [])
            end = len(positions) if before is None else bisect.bisect_left(positions, before)
            start = max(0, end - limit)
            items = [self._by_id[position[1]] for position in reversed(positions[start:end])]
            return Page(items, has_more=start > 0)

    def _add(self, record: R) -> None:
        if record.id in self._by_id:
            raise ValueError(f"id {record.id} is taken")
        if self._unique_of is not None:
            value = self._unique_of(record)
            if value in self._unique:
                raise Duplicate(value)
            self._unique[value] = record.id
        position = _position(record)
        self._by_id[record.id] = record
        bisect.insort(self._positions, position)
        for name in self._groups_of(record) if self._groups_of is not None else ():
            bisect.insort(self._groups.setdefault(name, []), position)
        self._latest_us = max(self._latest_us, record.created_us)


def _one_group(group: Callable[[R], str | None]) -> Callable[[R], frozenset[str]]:
    def groups_of(record: R) -> frozenset[str]:
        name = group(record)
        return frozenset() if name is None else frozenset((name,))

    return groups_of


def _groups(
    groups: Callable[[R], Iterable[str]] | None,
) -> Callable[[R], frozenset[str]] | None:
    if groups is None:
        return None
    return lambda record: frozenset(groups(record))


def _remove(positions: list[Position], position: Position) -> None:
    index = bisect.bisect_left(positions, position)
    if index < len(positions) and positions[index] == position:
        del positions[index]
