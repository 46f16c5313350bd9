"""Trace store fixtures: a real PostgreSQL server for the session and stores on both backends.

The server comes from `SPEC_AGENT_TEST_POSTGRES_URL` when it is set, else `.ci/postgres.sh` starts
one in a temporary folder and the fixture stops it at the end of the session. When no server can
start, PostgreSQL tests fail if the `CI` variable is set and are skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from spec_agent.db.store import SqlTraceStore

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "postgres.sh"
URL_VARIABLE = "SPEC_AGENT_TEST_POSTGRES_URL"


def _render(url) -> str:
    return url.render_as_string(hide_password=False)


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL is not available for the trace store tests: {reason}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}. CI requires it: install PostgreSQL or set {URL_VARIABLE}.")
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_server():
    """Yield the URL of a PostgreSQL server's maintenance database (`postgres`)."""
    given = os.environ.get(URL_VARIABLE)
    if given:
        yield _render(make_url(given).set(database="postgres"))
        return
    # Not under pytest's tmp_path: its folders are private to us, and the server runs as `postgres`.
    folder = tempfile.mkdtemp(prefix="spec-agent-pg-")
    command = ["bash", str(SCRIPT), "--dir", str(folder)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        _unavailable(f"{SCRIPT.name} failed to run: {error}")
    if result.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        _unavailable(f"{SCRIPT.name} exited with {result.returncode}: {result.stderr.strip()[-800:]}")
    url = result.stdout.strip().splitlines()[-1].split("=", 1)[1]
    yield _render(make_url(url).set(database="postgres"))
    subprocess.run([*command, "--stop"], capture_output=True, timeout=120, check=False)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """Create an empty database for one test and drop it afterwards."""
    name = f"trace_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield _render(make_url(postgres_server).set(database=name))
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """URL of an empty store on each backend: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'traces.sqlite'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(store_url):
    """An open store on each backend."""
    trace_store = SqlTraceStore(store_url)
    yield trace_store
    trace_store.close()
