"""The README quickstart runs exactly as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart:.*?-->\s*```python\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md has no quickstart block"
    return match.group(1)


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)


def run_block(code: str, directory: Path, env: dict[str, str] | None = None) -> list[str]:
    script = directory / "block.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "quickstart.py"
    script.write_text(quickstart())
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Build v2 1 1 1"  # t is the object update() changed
    assert "does not exist" in lines[1]
    assert (tmp_path / "orchestrator.db").exists()


EXPECTED_OUTPUT = {
    "class CodeTasks": ["['Build docs']"],
    "def retitle": ["Build docs", "['Build the docs']", "True"],
    'task_types={"code"}, lease': ["True"],
    "async def run(task": ["3"],
    "claim_unprocessed": ["['ticket_stage_completed']"],
    'agent_types={"planner"}': ["1 22.8 1", "True"],
    "pgbouncer=True": ["0"],
    "wait_until_ready": ["True True None", "36"],
    "max_replica_lag=5.0": ["2"],
    "wait=timedelta(seconds=30)": ["wake up"],
    "concurrency=4, prefetch=8": ["20 0 []"],
    "referencing(metadata)\nprint": ["True"],
    "metrics = await db.metrics()": ["{'ready': 1} 1 0"],
    "dry_run=True": [
        "{'tasks': 1, 'tool_executions': 0, 'events': 0, 'sessions': 0}",
        "{'tasks': 1, 'tool_executions': 0, 'events': 0, 'sessions': 0}",
    ],
}


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_every_readme_code_block_runs_as_written(
    index: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    code = python_blocks()[index]
    env = {}
    if "PGBOUNCER_URL" in code:  # a real PgBouncer, in front of an empty database
        env["PGBOUNCER_URL"] = request.getfixturevalue("pgbouncer_database_url")
    lines = run_block(code, tmp_path, env)
    for marker, expected in EXPECTED_OUTPUT.items():
        if marker in code:
            assert lines == expected


def test_every_readme_block_is_checked() -> None:
    blocks = python_blocks()
    assert len(blocks) == 1 + len(EXPECTED_OUTPUT)
    for marker in EXPECTED_OUTPUT:
        assert sum(marker in block for block in blocks) == 1, marker
