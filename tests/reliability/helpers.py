"""Shared checks of the reliability suite: a store's content fingerprint (row count and an
order-independent hash of every table) and a build runner that SIGKILLs itself at chosen
points of a build, without any test hook in the production code."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import duckdb

from explorer.analysis.specialists import SpecialistSettings
from explorer.store.user_data import sidecar_path

ROOT = Path(__file__).resolve().parents[2]

# The query parameters each page reads (app_pages/<name>.py), for the forged-link tests.
SPECIALIST_PARAMS = list(SpecialistSettings.field_names())  # the shared specialist sidebar
PAGE_PARAMS: dict[str, list[str]] = {
    "home": [],
    "methods": [],
    "tokens": [],
    "feature": ["sae", "feature"],
    "specialists": ["family", "findings", "top", "replicate_on", *SPECIALIST_PARAMS],
    "frequency": ["sae", "x", "ranks", "family", *SPECIALIST_PARAMS],
    "rankings": ["sae", "ranking", "n", *SPECIALIST_PARAMS],
    "taxonomy": ["sae", "support", "p", "label", "rows", "compare"],
    "logit_lens": ["sae", "view", "n", "rows", "given", "token", "top", "k", "min_examples", "seed"]
    + ["rank_by", "candidates"],
    "search": ["by", "sae", "q", "match", "rank", "rank_by", "n"],
    "compare": ["family", "compare", *SPECIALIST_PARAMS],
    "ablation": ["sae", "features", "general", "mode", "value", "positions"],
    "atlas": ["sae", "colour", *SPECIALIST_PARAMS],
}


TABLES_SQL = """SELECT table_name FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'main' ORDER BY table_name"""


def fingerprint(path: Path, user_data: bool = True) -> dict[str, tuple[int, int]]:
    """Per table: (rows, sum of the rows' hashes). Equal fingerprints mean equal content up to
    row order; read through plain read-only connections, independent of `Store`. Labels and
    the ledger are the user-data sidecar's (`<store>.user.sqlite`), no rows when it does not
    exist yet; with `user_data=False`, the store file's own tables only.

    The fingerprint is a function of the bytes of the files it reads (the store, its WAL, the
    sidecar and its journals), so it is computed once per state of those bytes: a check before
    and after every case reads each table again only when a file changed (51 ms a read)."""
    key = (str(path), user_data, _files_digest(path))
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = _fingerprint(path, user_data)
    return dict(_FINGERPRINTS[key])


_FINGERPRINTS: dict[tuple[str, bool, str], dict[str, tuple[int, int]]] = {}


def _files_digest(path: Path) -> str:
    """SHA-256 over the bytes of every file `_fingerprint` reads (missing ones marked)."""
    path = Path(path)
    sidecar = sidecar_path(path)
    digest = hashlib.sha256()
    for part in (
        path,
        Path(f"{path}.wal"),
        sidecar,
        Path(f"{sidecar}-wal"),
        Path(f"{sidecar}-journal"),
    ):
        digest.update(part.name.encode())
        digest.update(part.read_bytes() if part.is_file() else b"\0missing")
    return digest.hexdigest()


def _fingerprint(path: Path, user_data: bool) -> dict[str, tuple[int, int]]:
    with duckdb.connect(str(path), read_only=True) as con:
        tables = [row[0] for row in con.execute(TABLES_SQL).fetchall()]
        found = {
            table: tuple(
                int(value or 0)
                for value in con.execute(
                    f"SELECT count(*), sum(hash(t)::HUGEINT) FROM {table} t"  # noqa: S608
                ).fetchone()
            )
            for table in tables
        }
    if not user_data:
        return found
    sidecar = sidecar_path(path)
    for table in ("labels", "interventions"):
        rows: list[str] = []
        if sidecar.exists():
            with closing(sqlite3.connect(f"file:{sidecar}?mode=ro", uri=True)) as con:
                rows = sorted(repr(row) for row in con.execute(f"SELECT * FROM {table}"))
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()
        found[table] = (len(rows), int(digest[:15], 16) if rows else 0)
    return found


def file_digest(path: Path) -> str:
    """SHA-256 of the file's bytes (a read must leave them as they were)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


# The runner imports the CLI once, then forks one build per request read from stdin; the
# child arms its kill point (by wrapping library functions), sends its output to a log file
# and runs `explorer.cli.main`. Forking after the imports makes each build cost seconds
# instead of the ~10 s of importing torch, TransformerLens and SAELens again.
RUNNER = '''
"""Fault-injection build runner (written by tests/reliability): one JSON request per line,
{"point": ..., "argv": [...], "log": ..., "after": seconds}; answers {"status": ...}."""
import json
import logging
import os
import signal
import sys
import time

import torch

import explorer.build.single
import explorer.cli
import explorer.store.writer


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def wrap(owner, name, before=None, after=None):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if before is not None:
            before()
        result = original(*args, **kwargs)
        if after is not None:
            after()
        return result

    setattr(owner, name, wrapper)


def nth_call(n):
    calls = [0]

    def count():
        calls[0] += 1
        if calls[0] == n:
            die()

    return count


class KillAfterStep(logging.Filter):
    """SIGKILL once the store writer logs that step `name` of its finish is done."""

    def __init__(self, name):
        super().__init__()
        self.name_ = name

    def filter(self, record):
        if record.args and record.args[0] == self.name_:
            die()
        return True


def arm(point):
    writer = explorer.store.writer.StoreWriter
    if point == "before_model":
        wrap(explorer.build.single, "load_source", before=die)
    elif point == "extraction":
        wrap(writer, "add_acts", before=nth_call(5))
    elif point == "ingested":
        wrap(writer, "finish", before=die)
    elif point.startswith("finish_step:"):
        logging.getLogger("explorer.store.writer").addFilter(KillAfterStep(point.split(":", 1)[1]))
    elif point == "before_replace":
        wrap(explorer.store.writer.os, "replace", before=die)
    elif point == "after_replace":
        wrap(explorer.store.writer.os, "replace", after=die)
    elif point not in ("none", "timed"):
        raise SystemExit(f"unknown kill point {point}")


def child(request):
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log, 1)
    os.dup2(log, 2)
    arm(request["point"])
    torch.set_num_threads(1)
    return explorer.cli.main(request["argv"])


for line in sys.stdin:
    request = json.loads(line)
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = child(request)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = started + request.get("after", 1e9)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.perf_counter() >= deadline:
            os.kill(pid, signal.SIGKILL)
            done, status = os.waitpid(pid, 0)
            break
        time.sleep(0.005)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    answer = {
        "killed": killed,
        "code": None if killed else os.waitstatus_to_exitcode(status),
        "seconds": time.perf_counter() - started,
    }
    print(json.dumps(answer), flush=True)
'''


class BuildRunner:
    """The runner above as a subprocess: `run(point, argv)` builds once and says whether the
    build was killed (`after`: SIGKILL the build that many seconds after its fork)."""

    def __init__(self, folder: Path) -> None:
        script = folder / "fault_runner.py"
        script.write_text(textwrap.dedent(RUNNER))
        self.log = folder / "builds.log"
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def run(self, point: str, argv: list[str], after: float | None = None) -> dict:
        request = {"point": point, "argv": argv, "log": str(self.log)}
        if after is not None:
            request["after"] = after
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, f"the build runner died; its log:\n{self.log.read_text()[-3000:]}"
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()
