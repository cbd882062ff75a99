"""The documentation runs: every ```python block of README.md, and every script in examples/.

A ```py block is a fragment that needs what this process lacks (torchvision or timm, a process
group); what it shows runs in tests/test_swap_torchvision.py, test_swap_timm.py and
test_context_parallel.py."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_readme_has_python_blocks():
    assert README_BLOCKS, "README.md lost its quick start"


@pytest.mark.parametrize("index", range(len(README_BLOCKS)))
def test_readme_python_block_runs(index):
    exec(compile(README_BLOCKS[index], f"README.md python block {index}", "exec"), {})


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script):
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
