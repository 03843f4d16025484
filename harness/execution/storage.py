"""The run storage: an Optuna RDB storage (SQLite or PostgreSQL) with heartbeats and retry of dead workers' trials.

Opening it is where an unreachable database is answered in one line, and where SQLite is made safe for several
processes (a new file is built privately and linked into place; claims take the write lock up front).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

from harness.errors import HarnessError, masked
from harness.execution import reconnecting
from harness.execution.reconnecting import RECONNECT_S
from harness.files import absolute_sqlite_url

HEARTBEAT_S = 2
GRACE_S = 10  # a trial without a heartbeat for this long belongs to a dead worker
MAX_RETRY = 3


def default_storage() -> str:
    from harness.tracking import STORE_DIR

    return f"sqlite:///{(STORE_DIR / 'optuna.db').resolve()}"


def open_storage(url: str | None, create: bool = True) -> Any:
    """An RDB storage with heartbeats and retry of dead workers' trials, or a one-line error. Without `create`, a
    missing SQLite file is an error (`status` must not leave an empty store behind)."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats and stale-trial retry are marked experimental since Optuna 2.9 and are the documented way
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url is not None:
        folder_must_exist(url)  # a named store is never given a folder: a typo must not start a study elsewhere
    url = url or default_storage()
    if not create:
        from harness.tracking import must_exist

        must_exist(url, "run storage", "--storage")  # before the URL is made absolute: that creates its folder
    url = absolute_sqlite_url(url, "run storage")
    try:
        if url.startswith("sqlite:///"):
            _create_sqlite_atomically(Path(url.removeprefix("sqlite:///")))
        storage = reconnecting.storage_class()(
            url,
            engine_kwargs={"pool_pre_ping": True, **({"connect_args": {"timeout": 60}} if _is_sqlite(url) else {})},
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
        )
    except Exception as err:  # sqlalchemy/driver errors differ per database; the user needs the one line
        _unreachable(url, err)
    if _is_sqlite(url):
        _serialize_sqlite_transactions(storage.engine)
    else:
        _reconnect_with_backoff(storage.engine)
    return storage


def probe_storage(url: str | None) -> None:
    """Fail fast and create nothing, so `run` and `tune` answer before the data loads (it answered after it: 6 s
    quiet, 23-30 s under load, 2-core box): a named SQLite file's folder must exist; a database server must
    accept a TCP connection within PROBE_TIMEOUT_S and then a login (wrong password, missing driver)."""
    if url is None:
        return
    folder_must_exist(url)
    if _is_sqlite(url):
        return
    import socket
    import urllib.parse

    from harness.tracking import DB_PORTS, PROBE_TIMEOUT_S

    parsed = urllib.parse.urlsplit(url)
    dialect = parsed.scheme.split("+")[0]
    try:
        if dialect in DB_PORTS and parsed.hostname:
            socket.create_connection((parsed.hostname, parsed.port or DB_PORTS[dialect]),
                                     timeout=PROBE_TIMEOUT_S).close()
        import sqlalchemy

        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        try:
            engine.connect().close()
        finally:
            engine.dispose()
    except Exception as err:  # socket, sqlalchemy and driver errors differ per database; the user needs one line
        _unreachable(url, err)


def folder_must_exist(url: str) -> None:
    """A `sqlite:///` URL the user named: its folder must be there (a typo's folder was created, and the study
    trained there). The harness's own store folder (./mlruns, the default's) is the exception: it is made."""
    from harness.tracking import STORE_DIR

    if not url.startswith("sqlite:///"):
        return
    folder = Path(url.removeprefix("sqlite:///")).parent
    if not folder.is_dir() and folder.resolve() != STORE_DIR.resolve():
        raise HarnessError(f"run storage '{url}': no folder {folder}; create it, or point --storage at a file in "
                           f"an existing folder (or in ./{STORE_DIR}, made when missing)")


def _unreachable(url: str, err: BaseException) -> NoReturn:
    first = " ".join(str(getattr(err, "strerror", None) or err).split())[:200] or type(err).__name__
    raise HarnessError(f"run storage '{masked(url)}' is unreachable: {masked(first, url)}") from None


def _create_sqlite_atomically(path: Path) -> None:
    """A new SQLite store appears only with its schema complete. Two processes creating one at once (a `status`
    or a test polling while `run` starts) both stamp Optuna's schema version, and one fails on a UNIQUE
    constraint; so the schema is built in a private file and linked into place, which never overwrites."""
    import optuna

    if path.exists():
        return
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        optuna.storages.RDBStorage(f"sqlite:///{partial}").engine.dispose()
        try:
            os.link(partial, path)
        except FileExistsError:  # another process got there first; its store is complete too
            pass
    finally:
        partial.unlink(missing_ok=True)


def _reconnect_with_backoff(sql_engine: Any) -> None:
    """Ride out a database restart. `pool_pre_ping` finds the connections the restart cut when they are next
    used; this makes the new connection wait for the server to come back (exponential backoff, up to
    RECONNECT_S) instead of failing the worker. Added after the store opened: an unreachable database at the
    start is still answered at once, in one line."""
    import tenacity
    from sqlalchemy import event

    @event.listens_for(sql_engine, "do_connect")
    def _connect_with_backoff(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(dialect.loaded_dbapi.OperationalError),
            wait=tenacity.wait_exponential(multiplier=0.25, max=5),
            stop=tenacity.stop_after_delay(RECONNECT_S),
            reraise=True,
        )
        return retrying(dialect.connect, *cargs, **cparams)


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def _serialize_sqlite_transactions(sql_engine: Any) -> None:
    """SQLite has no SELECT ... FOR UPDATE, so Optuna's WAITING → RUNNING check-then-set can race between
    processes (measured: 13 claims of 12 trials by 3 threads). BEGIN IMMEDIATE takes the write lock when a
    transaction starts, which makes that check-then-set atomic; this is SQLAlchemy's documented pysqlite recipe."""
    from sqlalchemy import event

    @event.listens_for(sql_engine, "connect")
    def _no_implicit_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(sql_engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    sql_engine.dispose()  # connections opened before the listeners existed must not be reused
