"""Store-level tools (blocking): upgrading a store's layout and copying between stores."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .errors import InvalidSessionError, UnsupportedOperationError
from .lifecycle import MigrationReport
from .lifecycle import migrate as _migrate_plan
from .model import Session
from .stores import KVSessionStore, SessionStore
from .sync_api import SessionManager
from .transfer import PAGE_MESSAGES, ImportReport, checked_session

__all__ = ["MigrationReport", "copy_store", "migrate"]


def migrate(store: SessionStore, *, dry_run: bool = False) -> MigrationReport:
    """Upgrade a built-in store's key layout in place (resumable; see ``lifecycle.migrate``).

    ``dry_run=True`` reports what would be done and writes nothing.  Afterwards the
    store object can be used by managers.
    """
    if not isinstance(store, KVSessionStore):
        raise UnsupportedOperationError(
            f"migrate() upgrades the built-in stores; {type(store).__name__} keeps its own format"
        )
    report: MigrationReport = store._backend.run(_migrate_plan(dry_run), write=not dry_run)
    if not dry_run:
        store.layout = report.to_version
    return report


def copy_store(
    source: SessionStore,
    target: SessionStore,
    *,
    user_id: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> ImportReport:
    """Copy every session (or one user's) from ``source`` into ``target``, exactly.

    Sessions keep their ids, seqs, times and status, so any two stores can trade places
    (e.g. LMDB to Redis).  Idempotent like ``import_``: sessions already in ``target``
    are compared, not overwritten.  ``progress(n)`` is called after each page with the
    number of sessions copied in it.  Neither store is closed.

    A source session that an export line could not carry (e.g. from your own store: a
    message without an int seq, seqs out of order, a naive time) raises
    :class:`InvalidSessionError` as ``import_`` would, after the sessions before it are
    copied; nothing of it is written.
    """
    reading, writing = SessionManager(source), SessionManager(target)
    report = ImportReport()
    cursor = None
    while True:
        sessions, cursor = reading._run(reading._ops.export_page(user_id, cursor))
        valid, error = _valid_prefix(sessions)
        for chunk in _chunks(valid):
            report += writing._run(writing._ops.import_sessions(chunk))
            if progress is not None:
                progress(len(chunk))
        if error is not None:
            raise error
        if cursor is None:
            return report


def _valid_prefix(sessions: list[Session]) -> tuple[list[Session], InvalidSessionError | None]:
    """The sessions before the first invalid one, as an import stores them, and its error."""
    valid = []
    for session in sessions:
        try:
            valid.append(checked_session(session, f"source session {session.session_id!r:.80}"))
        except InvalidSessionError as exc:
            return valid, InvalidSessionError(
                f"{exc}; fix it in the source store and copy again (the sessions already "
                "copied are compared, not written twice)"
            )
    return valid, None


def _chunks(sessions: list[Session]) -> Iterator[list[Session]]:
    """Groups of sessions of at most ``PAGE_MESSAGES`` messages (a long one goes alone)."""
    chunk: list[Session] = []
    messages = 0
    for session in sessions:
        if chunk and messages + len(session.messages) > PAGE_MESSAGES:
            yield chunk
            chunk, messages = [], 0
        chunk.append(session)
        messages += len(session.messages)
    if chunk:
        yield chunk
