"""The docs quote benchmark results verbatim: every quoted block must equal its results file.

A page marks a quote with ``<!-- quoted from benchmarks/results/X.md -->`` ... ``<!-- end of
quote -->``; rerunning a benchmark rewrites the file, and this test says which page to update.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QUOTE = re.compile(r"<!-- quoted from (\S+) -->\n(.*?)<!-- end of quote -->", re.S)
PAGES = sorted([*ROOT.joinpath("docs").glob("*.md"), ROOT / "README.md"])


def quotes() -> list[tuple[str, str, str]]:
    found = []
    for page in PAGES:
        for match in QUOTE.finditer(page.read_text(encoding="utf-8")):
            found.append((page.relative_to(ROOT).as_posix(), match.group(1), match.group(2)))
    return found


def test_the_docs_quote_benchmark_results() -> None:
    quoted = {source for _, source, _ in quotes()}
    assert {"benchmarks/results/fused.md", "benchmarks/results/train.md"} <= quoted


@pytest.mark.parametrize(("page", "source", "text"), quotes(), ids=lambda v: str(v)[:40])
def test_quoted_block_equals_its_results_file(page: str, source: str, text: str) -> None:
    results = ROOT / source
    assert results.is_file(), f"{page} quotes {source}, which does not exist"
    assert text == results.read_text(encoding="utf-8"), (
        f"{page} quotes an old {source}: paste the file's current text between the markers"
    )
