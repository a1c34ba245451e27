"""Take turns: the read-modify-write calls on one session through one manager queue up.

``update()`` is optimistic across processes and managers: it loads, runs the caller's
change, and commits only if the session did not move meanwhile, else starts over.  Tasks
or threads of *one* manager have no reason to race each other that way (under a burst
they would mostly lose rounds to one another and use up their retries), so the managers
give each session id a lock while anyone holds or waits for it, and the lock is dropped
when the last one leaves: memory stays bounded by the sessions being updated right now.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Turns"]

L = TypeVar("L")


class _Turn(Generic[L]):
    __slots__ = ("lock", "users")

    def __init__(self, lock: L) -> None:
        self.lock = lock
        self.users = 0


class Turns(Generic[L]):
    """A lock per key (made by ``factory``), kept only while someone holds or waits."""

    def __init__(self, factory: Callable[[], L]) -> None:
        self._factory = factory
        self._turns: dict[Hashable, _Turn[L]] = {}
        self._guard = threading.Lock()  # (threads enter and leave concurrently)

    def enter(self, key: Hashable) -> L:
        """The lock for ``key``; every ``enter`` must be followed by one ``leave``."""
        with self._guard:
            turn = self._turns.get(key)
            if turn is None:
                turn = self._turns[key] = _Turn(self._factory())
            turn.users += 1
            return turn.lock

    def leave(self, key: Hashable) -> None:
        with self._guard:
            turn = self._turns[key]
            turn.users -= 1
            if turn.users == 0:
                del self._turns[key]

    def __len__(self) -> int:
        """How many keys have a lock now (for tests)."""
        return len(self._turns)
