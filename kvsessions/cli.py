"""The ``kvsessions`` command: a thin click layer over the library (no logic of its own).

Each command opens the store a URL names (:func:`kvsessions.open_store`), calls one or
two library methods and prints the result, as text or (``--json``) as one JSON document
on stdout.  Errors print one line on stderr and exit with a documented status.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import attrs
import click
import orjson
from click.core import ParameterSource

from .admin import copy_store, migrate
from .backends.base import LocalBackend
from .backends.lmdb import LMDBBackend
from .backends.redis import RedisBackend
from .backends.redis_check import check_redis
from .backends.sqlite import SQLiteBackend
from .core import check_records, inactive_since
from .errors import InvalidSessionError, KVSessionsError, StoreConfigError
from .model import Message, Session, utcnow
from .stores import DEFAULT_REDIS_PREFIX, KVSessionStore, LMDBSessionStore
from .sync_api import SessionManager
from .transfer import ImportReport
from .urls import StoreSpec, open_store, parse_store_url, require_existing

__all__ = ["EXIT_PROBLEMS", "EXIT_STORE", "EXIT_USAGE", "cli", "main"]

EXIT_PROBLEMS = 1  # the command ran and found problems (damage, conflicts, no such session)
EXIT_USAGE = 2  # bad options, arguments, store URL or path, or input file (click's own code)
EXIT_STORE = 3  # the store failed: unreachable, I/O, damaged, or needs migrate / newer kvsessions
ENV_STORE = "KVSESSIONS_STORE"
DEFAULT_STORE = "sessions.lmdb"  # as SessionManager() without a store
PAGE = 1000  # sessions per listing page when walking a whole store

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = f"""\b
The store: every command takes --store URL (or -s), else ${ENV_STORE}, else
./{DEFAULT_STORE}; check and migrate also take it as their argument, copy takes two.
  memory://                        lmdb:///abs/path.lmdb    lmdb:relative/path.lmdb
  sqlite:///abs/app.db?table=chat  sqlite:app.db            redis://host:6379/0?prefix=app:
  redis+cluster://host:7000        or a plain path ending in .lmdb, .db or .sqlite
Options in the URL: durability=full|fast, ttl=7d, map_size=64GiB (lmdb), table (sqlite),
prefix, shards, timeout (redis).

\b
Exit status:
  0  done
  1  done, and found problems: check found damaged records, import or copy found
     conflicting sessions (left alone), show found no such session
  2  usage: a bad option or argument, store URL or path (no store there), import file
  3  the store failed: unreachable, an engine or I/O error, damaged records, or a
     layout that needs `kvsessions migrate` (or a newer kvsessions)
Errors print one line on stderr, `kvsessions COMMAND: what happened; what to do`."""


class CommandError(click.ClickException):
    """A kvsessions error, shown as one line ``kvsessions COMMAND: message`` on stderr."""

    def __init__(self, message: str, exit_code: int) -> None:
        ctx = click.get_current_context(silent=True)
        self.command = ctx.command_path if ctx is not None else "kvsessions"
        super().__init__(" ".join(message.splitlines()))
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a class default

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"{self.command}: {self.message}", err=True, file=file)


def _handles_errors(command: F) -> F:
    """Turn library errors into one-line messages and their exit status."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (StoreConfigError, InvalidSessionError) as exc:
            raise CommandError(str(exc), EXIT_USAGE) from None
        except click.FileError as exc:
            raise CommandError(exc.format_message(), EXIT_USAGE) from None
        except KVSessionsError as exc:
            raise CommandError(str(exc), EXIT_STORE) from None
        except BrokenPipeError:
            raise  # (a reader that stopped early, as `| head`: click ends quietly)
        except OSError as exc:  # (reading input or writing output: a full disk, a lost device)
            raise CommandError(_os_error(exc), EXIT_STORE) from None

    return wrapper  # type: ignore[return-value]


def _os_error(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename is not None else ""
    return f"I/O error: {exc.strerror or exc}{where}; check the disk and try again"


# -- shared options and helpers ------------------------------------------------------------

store_option = click.option(
    "--store",
    "-s",
    "store_url",
    metavar="URL",
    envvar=ENV_STORE,
    help=f"the store (a URL or path; default ${ENV_STORE}, else ./{DEFAULT_STORE})",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="print one JSON document (for scripts)"
)


def _url(store_url: str | None, argument: str | None = None) -> str:
    """The store's URL: the argument, else --store, else $KVSESSIONS_STORE, else the default."""
    if argument is not None:
        given = click.get_current_context().get_parameter_source("store_url")
        if given is ParameterSource.COMMANDLINE and store_url != argument:
            raise click.UsageError(f"two stores given: {argument!r} and --store {store_url!r}")
        return argument
    return store_url or DEFAULT_STORE


@contextlib.contextmanager
def _manager(url: str, *, create: bool = False) -> Iterator[SessionManager]:
    """A manager on the store ``url`` names; unless ``create``, the store must exist."""
    store = _open(url, create=create)
    try:
        manager = SessionManager(store=store)  # refuses a layout that needs migrate
    except BaseException:
        store.close()
        raise
    with manager:
        yield manager


def _open(url: str, *, create: bool) -> KVSessionStore:
    try:
        return open_store(url, create=create)
    except StoreConfigError as exc:
        if url == DEFAULT_STORE and not Path(url).exists():
            raise StoreConfigError(
                f"{exc}; name a store with --store URL or ${ENV_STORE}"
            ) from None
        raise


def _emit(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS).decode())


@contextlib.contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A progress bar on stderr (a running count: totals are not known in advance).

    Shown only when stderr is a terminal, so pipes and logs stay clean.
    """
    if not sys.stderr.isatty():
        yield _NoProgress()
        return
    unknown_length: Iterator[None] = (_ for _ in ())
    with click.progressbar(
        unknown_length, label=label, file=sys.stderr, show_pos=True, show_eta=False
    ) as bar:
        yield bar


class _NoProgress:
    def update(self, n_steps: int) -> None:
        """Nothing to show: stderr is not a terminal."""


def _time(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"


def _summary(session: Session) -> dict[str, Any]:
    """A session header as JSON-ready data (no messages)."""
    return {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "status": str(session.status),
        "messages": session.message_count,
        "version": session.version,
        "created_at": session.created_at.isoformat(),
        "updated_at": session.updated_at.isoformat(),
        "parent_id": session.parent_id,
        "metadata": session.metadata,
    }


def _report(report: ImportReport, as_json: bool) -> None:
    """Print an import/copy report; exit 1 if it found conflicts."""
    if as_json:
        _emit(attrs.asdict(report))
    else:
        click.echo(
            f"created {report.created}, unchanged {report.unchanged}, "
            f"conflicts {len(report.conflicts)}"
        )
        for sid in report.conflicts:
            click.echo(f"conflict: session {sid!r} exists with different content (left alone)")
    if report.conflicts:
        raise click.exceptions.Exit(EXIT_PROBLEMS)


# -- the commands ----------------------------------------------------------------------------


@click.group(
    name="kvsessions",
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="kvsessions", prog_name="kvsessions")
def cli() -> None:
    """Inspect, move and maintain kvsessions stores (LMDB, SQLite, Redis, memory)."""


@cli.command()
@store_option
@json_option
@_handles_errors
def stats(store_url: str | None, as_json: bool) -> None:
    """Count sessions (active, archived), messages and users."""
    url = _url(store_url)
    counts: Counter[str] = Counter()
    messages = 0
    users: set[str] = set()
    with _manager(url) as manager, _progress("counting sessions") as bar:
        cursor = None
        while True:
            page = manager.list_sessions(status=None, order="created", limit=PAGE, cursor=cursor)
            for session in page.sessions:
                counts[str(session.status)] += 1
                messages += session.message_count
                users.add(session.user_id)
            bar.update(len(page.sessions))
            cursor = page.cursor
            if cursor is None:
                break
    data = {
        "store": parse_store_url(url).display,
        "sessions": counts.total(),
        "active": counts["active"],
        "archived": counts["archived"],
        "messages": messages,
        "users": len(users),
    }
    if as_json:
        _emit(data)
        return
    click.echo(f"store     {data['store']}")
    click.echo(
        f"sessions  {data['sessions']} ({data['active']} active, {data['archived']} archived)"
    )
    click.echo(f"messages  {messages}")
    click.echo(f"users     {len(users)}")


@cli.command("ls")
@store_option
@click.option("--user", "-u", help="only this user's sessions")
@click.option(
    "--inactive",
    type=click.FloatRange(min=0, min_open=True),
    metavar="DAYS",
    help="only sessions not saved for DAYS days (what archive-inactive --days DAYS takes)",
)
@click.option(
    "--status",
    type=click.Choice(["active", "archived", "all"]),
    help="which sessions (default: all; active with --inactive)",
)
@click.option(
    "--order",
    type=click.Choice(["activity", "created"]),
    default="activity",
    show_default=True,
    help="newest first, by last save (to the minute) or by creation",
)
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="page size"
)
@click.option("--cursor", help="continue after the page that printed this cursor")
@click.option("--all", "every", is_flag=True, help="every page, not just one")
@json_option
@_handles_errors
def ls(
    store_url: str | None,
    user: str | None,
    inactive: float | None,
    status: str | None,
    order: str,
    limit: int,
    cursor: str | None,
    every: bool,
    as_json: bool,
) -> None:
    """List sessions: all, a user's, or inactive ones.

    Newest first, one page at a time: a page that is not the last ends with the cursor
    of the next one (on stderr; in the JSON as "cursor"); --all walks every page.
    """
    if status is None:
        status = "active" if inactive is not None else "all"
    cutoff = inactive_since(inactive, utcnow) if inactive is not None else None
    found: list[Session] = []
    with _manager(_url(store_url)) as manager:
        while True:
            want = PAGE if every else limit - len(found)
            page = manager.list_sessions(
                user,
                status=None if status == "all" else status,
                order=order,
                limit=want,
                cursor=cursor,
            )
            found += [s for s in page.sessions if cutoff is None or s.updated_at < cutoff]
            cursor = page.cursor
            if cursor is None or (not every and len(found) >= limit):
                break
    if as_json:
        _emit({"sessions": [_summary(s) for s in found], "cursor": cursor})
        return
    rows = [
        (s.session_id, s.user_id, str(s.status), str(s.message_count), _time(s.updated_at))
        for s in found
    ]
    if rows:
        header = ("SESSION", "USER", "STATUS", "MESSAGES", "UPDATED")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
        for row in [header, *rows]:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            click.echo("  ".join([*cells, row[-1]]))
    else:
        click.echo("no sessions", err=True)
    if cursor is not None:
        click.echo(f"more: kvsessions ls ... --cursor {cursor}", err=True)


@cli.command()
@click.argument("session_id")
@store_option
@click.option("--last", type=click.IntRange(min=1), metavar="N", help="only the newest N messages")
@json_option
@_handles_errors
def show(session_id: str, store_url: str | None, last: int | None, as_json: bool) -> None:
    """Print a session and its messages."""
    url = _url(store_url)
    with _manager(url) as manager:
        session = manager.get_session(session_id, messages=last)
    if session is None:
        raise CommandError(
            f"no session {session_id!r} in {parse_store_url(url).display}", EXIT_PROBLEMS
        )
    if as_json:
        data = _summary(session)
        data["message_count"] = data.pop("messages")
        data["state"] = session.state
        data["messages"] = [_message(m) for m in session.messages]
        _emit(data)
        return
    click.echo(
        f"session {session.session_id}  user={session.user_id}  status={session.status}  "
        f"messages={session.message_count}  version={session.version}"
    )
    click.echo(f"created {_time(session.created_at)}  updated {_time(session.updated_at)}")
    if session.parent_id is not None:
        click.echo(f"forked from {session.parent_id}")
    for name, value in (("metadata", session.metadata), ("state", session.state)):
        if value:
            click.echo(f"{name}: {orjson.dumps(value).decode()}")
    shown = len(session.messages)
    if shown < session.message_count:
        click.echo(f"(the last {shown} of {session.message_count} messages)")
    for message in session.messages:
        click.echo()
        click.echo(f"#{message.seq}  {_time(message.timestamp)}  {message.role}")
        content = message.content
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        for line in text.splitlines() or [""]:
            click.echo(f"    {line}")
        if message.extras:
            click.echo(f"    extras: {orjson.dumps(message.extras).decode()}")


def _message(message: Message) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "timestamp": message.timestamp.isoformat(),
        "extras": message.extras,
    }


@cli.command()
@click.argument("file", type=click.File("wb", lazy=True), default="-")
@store_option
@click.option("--user", "-u", help="only this user's sessions")
@json_option
@_handles_errors
def export(file: IO[bytes], store_url: str | None, user: str | None, as_json: bool) -> None:
    """Write sessions as JSON Lines (default stdout).

    To FILE, or - for stdout (the default).

    The format (kvsessions.session/1, one session per line) is what import reads.
    """
    to_stdout = file.name in ("-", "<stdout>")
    with _written(file, close=not to_stdout), _manager(_url(store_url)) as manager:
        count = manager.export(file, user_id=user)
    summary = {"exported": count, "file": "-" if to_stdout else file.name}
    if as_json:
        click.echo(orjson.dumps(summary).decode(), err=to_stdout)
    else:
        where = "stdout" if to_stdout else file.name
        click.echo(f"exported {count} session(s) to {where}", err=to_stdout)


@contextlib.contextmanager
def _written(file: IO[bytes], *, close: bool) -> Iterator[None]:
    """Flush ``file`` after the block (and close it if ``close``), so that a write error
    is raised before anything reports success."""
    try:
        yield
        file.flush()
    except BaseException:
        if close:
            with contextlib.suppress(OSError):  # (the first error is the one to report)
                file.close()
        raise
    if close:
        file.close()


@cli.command("import")
@click.argument("file", type=click.File("rb"))
@store_option
@json_option
@_handles_errors
def import_(file: IO[bytes], store_url: str | None, as_json: bool) -> None:
    """Read sessions written by export (FILE or -).

    From FILE, or - for stdin.

    Sessions keep their ids, messages and times.  Idempotent: sessions already there
    and identical are counted unchanged; ones that differ are left alone and listed
    (exit status 1).  Creates the store if it does not exist.
    """
    with _manager(_url(store_url), create=True) as manager:
        report = manager.import_(file)
    _report(report, as_json)


@cli.command()
@click.argument("source", metavar="SOURCE_URL")
@click.argument("target", metavar="TARGET_URL")
@click.option("--user", "-u", help="only this user's sessions")
@json_option
@_handles_errors
def copy(source: str, target: str, user: str | None, as_json: bool) -> None:
    """Copy all sessions from one store to another.

    Exactly: ids, messages, times and status (e.g. LMDB to Redis and back).

    Idempotent like import: sessions already in the target are compared, not
    overwritten.  The target is created if it does not exist.
    """
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(contextlib.closing(_open(source, create=False)))
        dst = stack.enter_context(contextlib.closing(_open(target, create=True)))
        bar = stack.enter_context(_progress("copying sessions"))
        report = copy_store(src, dst, user_id=user, progress=bar.update)
    _report(report, as_json)


@cli.command("archive-inactive")
@click.option(
    "--days", type=click.FloatRange(min=0), required=True, help="not saved for this many days"
)
@store_option
@click.option("--dry-run", is_flag=True, help="only count them")
@json_option
@_handles_errors
def archive_inactive(days: float, store_url: str | None, dry_run: bool, as_json: bool) -> None:
    """Archive sessions not saved for --days DAYS.

    Archived sessions are read-only and still loadable; `ls --inactive DAYS` lists them
    first, `--dry-run` counts them.
    """
    with _manager(_url(store_url)) as manager:
        count = manager.archive_inactive(days, dry_run=dry_run)
    if as_json:
        _emit({"archived": count, "days": days, "dry_run": dry_run})
    else:
        verb = "would archive" if dry_run else "archived"
        click.echo(f"{verb} {count} session(s) not saved for {days:g} days")


@cli.command("purge-archived")
@click.option(
    "--days", type=click.FloatRange(min=0), required=True, help="last saved this many days ago"
)
@store_option
@click.option("--dry-run", is_flag=True, help="only count them")
@json_option
@_handles_errors
def purge_archived(days: float, store_url: str | None, dry_run: bool, as_json: bool) -> None:
    """Delete archived sessions for good.

    Those not saved for --days DAYS; `--dry-run` counts them.
    """
    with _manager(_url(store_url)) as manager:
        count = manager.purge_archived(days, dry_run=dry_run)
    if as_json:
        _emit({"purged": count, "days": days, "dry_run": dry_run})
    else:
        verb = "would delete" if dry_run else "deleted"
        click.echo(f"{verb} {count} archived session(s) not saved for {days:g} days")


@cli.command()
@store_option
@json_option
@_handles_errors
def sweep(store_url: str | None, as_json: bool) -> None:
    """Remove expired sessions (ttl).

    Sessions not saved for the store's ttl (e.g. lmdb:x.lmdb?ttl=7d) are invisible
    already; this removes their records and index entries.
    """
    with _manager(_url(store_url)) as manager:
        count = manager.sweep()
    if as_json:
        _emit({"removed": count})
    else:
        click.echo(f"removed {count} expired session(s)")


@cli.command()
@click.argument("store", required=False, metavar="[URL|PATH]")
@store_option
@click.option("--table", help="SQLite table (default sessions, or ?table= in the URL)")
@json_option
@_handles_errors
def check(store: str | None, store_url: str | None, table: str | None, as_json: bool) -> None:
    """List damaged records (LMDB, SQLite, Redis); read-only.

    Reads every record: headers and messages must decode, index entries must point at
    a session (on Redis: every key of the store's prefix).  Exit status 1 when any
    record is damaged.
    """
    spec = parse_store_url(_url(store_url, store))
    if spec.kind == "memory":
        raise StoreConfigError(
            f"check reads LMDB, SQLite and Redis stores, not {spec.kind}:// ({spec.display})"
        )
    if table is not None:
        if spec.kind != "sqlite":
            raise click.UsageError("--table is for SQLite stores")
        spec = attrs.evolve(spec, options={**spec.options, "table": table})
    if spec.kind != "redis":
        require_existing(spec, table_hint="--table NAME")
    backend = _read_only_backend(spec)
    try:
        if isinstance(backend, RedisBackend):
            problems = check_redis(backend)
        else:
            problems = backend.run(check_records(), write=False)
    finally:
        backend.close()
    if as_json:
        _emit(
            {
                "store": spec.display,
                "damaged": [
                    {"key": repr(key), "key_hex": key.hex(), "problem": problem}
                    for key, problem in problems
                ],
                "count": len(problems),
            }
        )
    else:
        for key, problem in problems:
            click.echo(f"{key!r}: {problem}")
        click.echo(f"{spec.display}: {len(problems)} damaged record(s)")
    if problems:
        raise click.exceptions.Exit(EXIT_PROBLEMS)


def _read_only_backend(spec: StoreSpec) -> LocalBackend | RedisBackend:
    """The engine of an existing store, opened without the store's format check (which
    may write)."""
    if spec.kind == "redis":
        options = dict(spec.options)
        prefix = options.pop("prefix", DEFAULT_REDIS_PREFIX)
        return RedisBackend(spec.target, prefix=prefix, ttl=options.pop("ttl", None), **options)
    if spec.kind == "lmdb":
        return LMDBBackend(spec.target, durability="fast")
    table = spec.options.get("table", "sessions")
    return SQLiteBackend(spec.target, table_name=table, durability="fast")


@cli.command("migrate")
@click.argument("store", required=False, metavar="[URL|PATH]")
@store_option
@click.option("--dry-run", is_flag=True, help="report what would be done; write nothing")
@json_option
@_handles_errors
def migrate_(store: str | None, store_url: str | None, dry_run: bool, as_json: bool) -> None:
    """Upgrade a store's key layout in place.

    Resumable: progress is committed in chunks, so after a stop run it again.

    Stop processes using an older kvsessions on the store first.
    """
    url = _url(store_url, store)
    with contextlib.closing(_open(url, create=False)) as opened:
        report = migrate(opened, dry_run=dry_run)
    if as_json:
        _emit(attrs.asdict(report))
    elif report.from_version == report.to_version:
        click.echo(f"layout {report.to_version} is current: nothing to do")
    elif dry_run:
        click.echo(
            f"would upgrade layout {report.from_version} -> {report.to_version}, "
            f"indexing {report.sessions} session(s); nothing written"
        )
    else:
        click.echo(
            f"upgraded layout {report.from_version} -> {report.to_version}: "
            f"{report.sessions} session(s) indexed"
        )


# -- demo --------------------------------------------------------------------------------------

_SCRIPT = {
    "alice": ["Hi! Can you help me plan a trip to Lisbon?", "Three days, in May."],
    "bob": ["What's the capital of Australia?"],
    "carol": ["Summarise our last chat, please.", "Thanks!", "One more thing: bullet points."],
}


def _echo_agent(session: Session, text: str) -> str:
    """A stand-in for a model call: answers from the session's own state."""
    turn = session.get_state("turns", 0) + 1
    session.set_state("turns", turn)
    return f"(turn {turn}) You said: {text!r}"


@cli.command()
@click.option(
    "--path",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("kvsessions-demo.lmdb"),
    show_default=True,
    help="LMDB directory to use",
)
@_handles_errors
def demo(path: Path) -> None:
    """Run a scripted chat on an LMDB store.

    Three users talk to a stand-in agent; then it prints what is stored and where.
    Run it again and the same sessions continue.
    """
    with SessionManager(store=LMDBSessionStore(path)) as manager:
        for user, lines in _SCRIPT.items():
            session_id = f"demo-{user}"
            session = manager.get_session(session_id) or manager.create_session(
                user_id=user, session_id=session_id, metadata={"channel": "demo"}
            )
            for text in lines:
                session.add_message("user", text)
                session.add_message("assistant", _echo_agent(session, text))
                manager.save(session)  # one atomic commit: the two new messages + header
        click.echo(f"Stored in LMDB store {Path(path).resolve()} (durability='full'):\n")
        for user in _SCRIPT:
            for session in manager.get_sessions_for_user(user):
                click.echo(
                    f"session {session.session_id}  user={session.user_id}  "
                    f"messages={session.message_count}  version={session.version}  "
                    f"state={session.state}  updated={session.updated_at:%Y-%m-%d %H:%M:%S}Z"
                )
                for message in session.messages[-4:]:
                    click.echo(f"  #{message.seq:<3} {message.role:>9}: {message.content}")
        click.echo("\nRun the demo again: the same sessions are loaded and continued.")
        click.echo(
            f"Look inside: kvsessions ls --store {path}; kvsessions show demo-alice -s {path}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line (``argv`` defaults to ``sys.argv[1:]``); the exit status."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="kvsessions")
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
