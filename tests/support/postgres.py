"""A throwaway PostgreSQL cluster on loopback for tests (initdb + pg_ctl as the ``postgres`` user, < 1 s).

``PostgresCluster.start()`` returns a cluster; ``new_database()`` gives each test its own empty database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.server import free_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def unavailable_reason() -> str | None:
    """Why no cluster can be started here (None when it can)."""
    if not (PG_BIN / "initdb").exists():
        return f"PostgreSQL 15 is not installed at {PG_BIN} (scripts/system-deps test installs it)"
    if os.geteuid() != 0:
        return "starting a throwaway cluster needs root (runuser -u postgres)"
    return None


def _as_postgres(*args: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60)


@dataclass
class PostgresCluster:
    root: Path
    port: int = field(default_factory=free_port)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @classmethod
    def start(cls) -> PostgresCluster:
        # Not under pytest's tmp dir: that one is 0700 root, so the postgres user could not reach it.
        root = Path(tempfile.mkdtemp(prefix="hangar-pg-"))
        os.chmod(root, 0o755)
        cluster = cls(root=root)
        cluster.data_dir.mkdir()
        cluster.socket_dir.mkdir()
        shutil.chown(cluster.data_dir, "postgres", "postgres")
        shutil.chown(cluster.socket_dir, "postgres", "postgres")
        _as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(cluster.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = f"-k {cluster.socket_dir} -p {cluster.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(cluster.data_dir),
            "-l",
            str(cluster.data_dir / "server.log"),
            "-w",
            "-o",
            options,
            "start",
        )
        return cluster

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One cluster per test session (import this fixture into a conftest to use it)."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    cluster = PostgresCluster.start()
    yield cluster
    cluster.stop()
