"""Real services on loopback for benchmarks and tests: a throwaway PostgreSQL and an `mlflow server`.

Both bind 127.0.0.1 on a free port and are stopped (and their folders removed) when the context ends.
PostgreSQL needs Debian's server binaries (`apt-get install postgresql`); `postgres_binaries()` says if they are here.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {seconds} s")


def postgres_binaries() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(found[-1]) if found else None


_RESTARTS: dict[str, Callable[[], None]] = {}  # url → restart of a server started here


def restart(url: str) -> None:
    """Restart the server at `url` (started by `postgres` or `mlflow_server`) on the same port, and wait for it:
    the transient outage that clients must ride out."""
    _RESTARTS[url]()


@contextmanager
def postgres(databases: tuple[str, ...] = ("optuna", "mlflow"), max_connections: int = 100) -> Iterator[str]:
    """A PostgreSQL server with `databases`; yields `postgresql://postgres@127.0.0.1:PORT` (append /DB)."""
    bin_dir, port = postgres_binaries(), free_port()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not installed (apt-get install postgresql)")
    # its own folder outside pytest's (root-only) tmp tree: the server runs as the postgres user
    data = Path(tempfile.mkdtemp(prefix="harness-pg-")) / "data"
    data.parent.chmod(0o777)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run([*as_postgres, bin_dir / "initdb", "-D", data, "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    options = f"-p {port} -h 127.0.0.1 -k {data.parent} -c max_connections={max_connections}"
    pg_ctl = [*as_postgres, bin_dir / "pg_ctl", "-D", data, "-o", options, "-w", "-l", data.parent / "log"]
    subprocess.run([*pg_ctl, "start"], check=True, capture_output=True)
    url = f"postgresql://postgres@127.0.0.1:{port}"
    # "fast": open sessions are cut, as when a managed database fails over or an operator restarts it
    _RESTARTS[url] = lambda: subprocess.run([*pg_ctl, "-m", "fast", "restart"], check=True, capture_output=True)
    try:
        for name in databases:
            subprocess.run([bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name],
                           check=True)
        yield url
    finally:
        _RESTARTS.pop(url, None)
        subprocess.run([*as_postgres, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data.parent, ignore_errors=True)


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, workers: int = 1) -> Iterator[str]:
    """`mlflow server` on loopback serving artifacts from `artifacts`; yields its URL once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
               "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    servers: list[subprocess.Popen] = []

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(f"{url}/health", timeout=2).status == 200
        except OSError:
            return False

    def start() -> None:
        servers.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_until(healthy, "mlflow server", 300)  # its schema migrations take minutes on a loaded machine

    def stop() -> None:
        server = servers.pop()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    _RESTARTS[url] = lambda: (stop(), start())
    try:
        start()
        yield url
    finally:
        _RESTARTS.pop(url, None)
        if servers:
            stop()
