"""Every fenced Python block of README.md runs as written, as the whole program it is.

Each block runs in a fresh folder as its own process, with no planflow setting in the environment. A block that
opens ``open_provider()`` / ``open_async_provider()`` without a URL reads ``PLANFLOW_DATABASE_URL``: it runs once
on SQLite (the unset default, ``planflow.db`` in its folder) and once on PostgreSQL (a fresh schema of the test
server), as the README says. What each block prints is checked where the README says what it prints.

The README's "two commands" are checked too: the first installs only the ``cli`` extra, so ``planflow demo``
must run without psycopg, TinyDB and OpenTelemetry; the second is ``./scripts/test``, which exists and runs the
checks the README names.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)
#: A call that names no store, or a store read from PLANFLOW_DATABASE_URL: the environment decides, so the block
#: runs on both.
ANY_STORE = re.compile(
    r"open_(?:async_)?provider\((?:\)|listeners=|telemetry=)|environ\.get\(\"PLANFLOW_DATABASE_URL\""
)


@dataclass(frozen=True)
class Block:
    line: int
    code: str

    @property
    def any_store(self) -> bool:
        return bool(ANY_STORE.search(self.code))


def python_blocks() -> list[Block]:
    text = README.read_text()
    return [
        Block(text.count("\n", 0, match.start()) + 1, match["body"])
        for match in FENCE.finditer(text)
        if match["info"].strip().split(" ")[0] == "python"
    ]


#: What a block prints, by a line of its code: a check on (stdout, stderr).
EXPECTED: dict[str, Callable[[str, str], bool]] = {
    # Using it: the tree drawn depth-first, then the workflow completed.
    "complete_workflow": lambda out, err: (
        out.splitlines() == ["fanout PENDING", "  charge SUCCESS", "    log PENDING", "SUCCESS"]
    ),
    "async with provider.transaction()": lambda out, err: out == "['charge']\n",
    "asyncio.gather(worker": lambda out, err: (
        out.startswith("20 tasks done, [") and sum(map(int, re.findall(r"\d+", out.split("[", 1)[1]))) == 20
    ),
    "logging.basicConfig": lambda out, err: (
        re.search(r"^DEBUG planflow\.(sqlite|postgres): statement", err, re.M) is not None
    ),
    "ConsoleSpanExporter": lambda out, err: '"name": "upsert_state workflow_states"' in out,
    "usage_total": lambda out, err: out == "50 + 10 failures\n15 tokens\n",
    "TinyDbExecutionRepository": lambda out, err: out == "10 occurrences\n",
    "listeners=[slow_calls]": lambda out, err: "Traceback" not in err,
    # Work queues: the dedup holder, the claims in priority order under a limit with a retry, the statistics.
    'set_limit("s3"': lambda out, err: (
        out == "dedup: r3\nclaimed: ['r2', 'r1', 'u1', 'u2', 'u1']\ndelayed: 1 done: 4\n"
    ),
    # A repeat of a keyed merge returns the first outcome and adds nothing: 1500 tokens stored, not 3000.
    # Growing past one server: reads after the caller's writes see them, with read_url set.
    "read_url": lambda out, err: out == "{'amount': 2}\n1 {'amount': 3}\n",
    # History: a reclaimed task's timeline, and a workflow's records read in two keyset pages.
    "include_tasks=True, limit=2": lambda out, err: (
        out.splitlines()
        == [
            "None -> PENDING by None v 1",
            "PENDING -> RUNNING by host-1/w1 v 2",
            "RUNNING -> RUNNING by host-2/w1 v 3",
            "RUNNING -> SUCCESS by host-2/w1 v 5",
            "5 records in the workflow",
        ]
    ),
    "workflows.cancel": lambda out, err: (
        out.startswith("fenced: task state 'report-3/render' was canceled (wrong month)")
        and out.splitlines()[-1]
        == "RUNNING report-3 {'fetch': 'SUCCESS', 'render': 'PENDING', 'mail': 'PENDING'}"
    ),
    "idempotency_key=key": lambda out, err: out.startswith("1500 1500 UsageSummary(") and "3000" not in out,
}


def _expected(block: Block) -> Callable[[str, str], bool]:
    found = [check for key, check in EXPECTED.items() if key in block.code]
    assert len(found) == 1, f"the README block at line {block.line} needs one expectation in EXPECTED"
    return found[0]


def test_every_python_block_is_run_and_no_block_hides_under_another_name() -> None:
    text = README.read_text()
    infos = [match["info"].strip() for match in FENCE.finditer(text)]
    assert set(infos) <= {"python", "sh", ""}, infos  # py, python3, pycon would escape the run below
    blocks = python_blocks()
    assert len(blocks) == infos.count("python") >= 8
    for block in blocks:
        _expected(block)


def run_block(block: Block, folder: Path, database_url: str | None) -> subprocess.CompletedProcess[str]:
    program = folder / "example.py"
    program.write_text(block.code)
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("PLANFLOW_DB_", "PLANFLOW_DATABASE_URL"))
    }
    if database_url is not None:
        environ["PLANFLOW_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", str(program)],
        cwd=folder,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _ids(block: Block) -> str:
    return f"README line {block.line}"


@pytest.mark.parametrize("block", python_blocks(), ids=_ids)
def test_the_readme_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    done = run_block(block, tmp_path, None)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _expected(block)(done.stdout, done.stderr), done.stdout + done.stderr


@pytest.mark.postgres
@pytest.mark.parametrize("block", [b for b in python_blocks() if b.any_store], ids=_ids)
def test_the_readme_block_runs_as_written_on_postgres(
    block: Block, tmp_path: Path, postgres_url: str
) -> None:
    done = run_block(block, tmp_path, postgres_url)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert _expected(block)(done.stdout, done.stderr), done.stdout + done.stderr
    assert not (tmp_path / "planflow.db").exists()  # it ran on PostgreSQL, not on the default file


#: Makes the modules of the other extras missing, as in an install of '.[cli]' alone.
ONLY_THE_CLI_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

class Blocker(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"psycopg", "psycopg_pool", "psycopg_binary", "tinydb", "opentelemetry"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
"""


def test_the_first_of_the_two_commands_needs_only_the_cli_extra(tmp_path: Path) -> None:
    text = README.read_text()
    assert "pip install -q '.[cli]' && .venv/bin/planflow demo" in text
    (tmp_path / "sitecustomize.py").write_text(ONLY_THE_CLI_EXTRA)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLANFLOW_")}
    environ["PYTHONPATH"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "planflow", "demo", "--tasks", "40"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert (tmp_path / "planflow.db").exists()  # "creates planflow.db here"


def test_the_second_of_the_two_commands_runs_the_checks_the_readme_names() -> None:
    script = (ROOT / "scripts" / "test").read_text()
    assert "./scripts/test" in README.read_text()
    assert os.access(ROOT / "scripts" / "test", os.X_OK)
    for check in ("ruff check", "ruff format --check", "pyright", "pytest"):
        assert check in script, check


@pytest.mark.skipif(not (Path(sys.executable).parent / "pyright").exists(), reason="pyright is not installed")
def test_every_python_block_passes_pyright_strict(tmp_path: Path) -> None:
    for block in python_blocks():
        (tmp_path / f"readme_line_{block.line}.py").write_text(block.code)
    (tmp_path / "pyrightconfig.json").write_text('{"typeCheckingMode": "strict"}')

    done = subprocess.run(
        [str(Path(sys.executable).parent / "pyright"), "--pythonpath", sys.executable, str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout
    assert "0 errors" in done.stdout
