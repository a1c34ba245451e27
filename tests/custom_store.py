"""A user-style store: whole sessions as JSON in a dict, with ``async def`` methods.

It is what the README's "bring your own storage" example looks like, and the conformance
suite runs over it like over the built-in stores.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import datetime

from kvsessions import Session, SessionStore


class DictStore(SessionStore):
    """Keeps deep copies, so the manager never shares objects with the 'storage'."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    async def save(self, session: Session) -> None:
        await asyncio.sleep(0)
        self.sessions[session.session_id] = copy.deepcopy(session)

    async def get(self, session_id: str) -> Session | None:
        found = self.sessions.get(session_id)
        return copy.deepcopy(found) if found is not None else None

    async def delete(self, session_id: str) -> bool:
        return self.sessions.pop(session_id, None) is not None

    async def list_for_user(self, user_id: str) -> list[Session]:
        mine = [s for s in self.sessions.values() if s.user_id == user_id]
        return [copy.deepcopy(s) for s in sorted(mine, key=lambda s: s.created_at)]

    def list_inactive(self, before: datetime) -> list[Session]:  # a plain method works too
        return [copy.deepcopy(s) for s in self.sessions.values() if s.updated_at < before]

    def list_all(self) -> list[Session]:  # enables list_sessions() without a user, export
        return [copy.deepcopy(s) for s in self.sessions.values()]

    def clear(self) -> None:
        self.sessions.clear()
