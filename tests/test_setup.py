"""A newcomer's set-up (issue 14): the README's commands, the declared dependencies, and a test
run that cannot pass by skipping.

The fresh-clone simulation runs pytest in a subprocess on a tiny test file that uses this
project's ``tests/conftest.py``, with no ``$LOGLOSS_DATA`` and an empty user cache: under
``CI=true`` it must fail and say why; after ``logloss data fetch mnist`` (simulated by linking
the MNIST files into the user cache, where the command downloads them) it must pass.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"

TINY_TEST = """
from logloss.data import load_dataset


def test_reads_mnist(data_dir):
    images, labels = load_dataset("mnist", "test", data_dir=data_dir)
    assert images.shape == (10000, 28, 28)
    assert labels[:3].tolist() == [7, 2, 1]  # MNIST's first test digits, the article's 7 first
"""


def fresh_clone_run(tmp_path: Path, *, ci: bool, cache: Path) -> subprocess.CompletedProcess:
    """pytest on the tiny test with this project's conftest, data only in the user cache."""
    project = tmp_path / "clone"
    project.mkdir(exist_ok=True)
    shutil.copy(TESTS / "conftest.py", project / "conftest.py")
    (project / "test_tiny.py").write_text(TINY_TEST)
    env = {key: value for key, value in os.environ.items() if key not in ("LOGLOSS_DATA", "CI")}
    env.update({"XDG_CACHE_HOME": str(cache), "HOME": str(tmp_path), "COLUMNS": "200"})
    if ci:
        env["CI"] = "true"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", project]
    return subprocess.run(
        [*map(str, command), str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=project,
        check=False,
    )


def test_a_fresh_clone_without_data_fails_under_ci_and_passes_after_fetch(tmp_path, data_dir):
    cache = tmp_path / "cache"
    cache.mkdir()
    without = fresh_clone_run(tmp_path, ci=True, cache=cache)
    assert without.returncode == 1, without.stdout
    assert re.search(r"\b1 (failed|error)\b", without.stdout)  # a fixture fails as an error
    assert "required in CI: MNIST not found (looked in --data-dir, $LOGLOSS_DATA" in without.stdout

    # `logloss data fetch mnist` puts the four files in the user cache's mnist/ folder.
    fetched = cache / "logloss" / "mnist"
    fetched.mkdir(parents=True)
    for source in sorted((data_dir / "mnist").glob("*.gz")):
        (fetched / source.name).symlink_to(source)
    after = fresh_clone_run(tmp_path, ci=True, cache=cache)
    assert after.returncode == 0, after.stdout
    assert "1 passed" in after.stdout


def test_without_ci_missing_data_is_a_skip_with_a_loud_summary(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    done = fresh_clone_run(tmp_path, ci=False, cache=cache)
    assert done.returncode == 0, done.stdout
    assert "1 skipped" in done.stdout
    assert "NOT TESTED: data or tools missing" in done.stdout
    assert "Get MNIST with `logloss data fetch mnist`" in done.stdout


# --------------------------------------------------------------------------------------------
# the README's commands are the ones CI runs


def readme_commands() -> dict[str, str]:
    """The README's set-up and test commands: the first ```bash block after each heading line."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up, test, try", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)\n```", section, re.S)
    return {"set up": blocks[0], "test": blocks[2]}


def test_ci_runs_the_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for name, command in readme_commands().items():
        assert command in ci, f"the README's {name} command is not a line of .ci/run: {command}"


def test_readme_tells_both_kinds_of_user_how_to_install_torch_and_get_data():
    text = (ROOT / "README.md").read_text()
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in text
    assert "CUDA" in text
    assert "logloss data fetch mnist" in readme_commands()["test"]


def test_the_readme_example_report_is_ignored_by_git():
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.fail("tests run from a git checkout (CI clones the repository)")
    ignored = subprocess.run(
        [git, "check-ignore", "-q", "report.html"], cwd=ROOT, timeout=60, check=False
    )
    assert ignored.returncode == 0, "report.html (the README's `logloss report` example)"


# --------------------------------------------------------------------------------------------
# every third-party import is declared


def declared_distributions() -> set[str]:
    """Names of pyproject.toml's runtime dependencies, normalised (PEP 503).

    Read with a pattern, not tomllib, which Python 3.10 lacks.
    """
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M).group(1)
    names = re.findall(r'^\s*"([A-Za-z0-9_.-]+)', block, re.M)
    return {re.sub(r"[-_.]+", "-", name).lower() for name in names}


def imported_top_level_modules() -> set[str]:
    """Top-level modules imported anywhere in the package (inside functions too)."""
    modules = set()
    for path in (ROOT / "src" / "logloss").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"logloss", "__future__"}


# Imported only where installed, never required: the Triton kernel needs a CUDA machine.
OPTIONAL = {"triton", "pyarrow"}  # CUDA only; the `parquet` extra (imported only for .parquet)


def test_every_imported_package_is_a_declared_dependency():
    # Issue 14: serve.py used pydantic 2's API while only fastapi (which allows pydantic 1) was
    # declared.  A module used directly must be declared directly.
    providers = metadata.packages_distributions()
    declared = declared_distributions()
    undeclared = {}
    for module in sorted(imported_top_level_modules() - OPTIONAL):
        names = {re.sub(r"[-_.]+", "-", d).lower() for d in providers.get(module, [module])}
        if not names & declared:
            undeclared[module] = sorted(names)
    assert undeclared == {}, f"imported but not in pyproject.toml's dependencies: {undeclared}"
