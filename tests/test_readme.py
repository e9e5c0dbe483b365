"""The README quickstart runs exactly as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def quickstart() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- quickstart:.*?-->\s*```python\n(.*?)```", readme, re.DOTALL)
    assert match, "README.md has no quickstart block"
    return match.group(1)


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
