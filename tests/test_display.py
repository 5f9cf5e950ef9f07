"""Notebook display: ``_repr_html_`` of an evaluation, an Explanation and an MLEResult, read
back with the standard library's HTML parser; short ``__repr__`` s."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser

import numpy as np
from PIL import Image

import logloss
from logloss.insight.explain import explain

VOID = {"img", "br", "meta", "link", "hr", "input"}  # elements without an end tag


class Tree(HTMLParser):
    """Tables (rows of cell texts by table id), images (id -> src) and paragraphs of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: dict[str, str] = {}
        self.text: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.open_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag not in VOID:
            self.open_tags.append(tag)
        if tag == "table":
            self._table = attributes.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images[attributes["id"]] = attributes["src"]

    def handle_endtag(self, tag):
        assert self.open_tags[-1:] == [tag], (self.open_tags, tag)  # closes the open element
        self.open_tags.pop()
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)


def parse(page: str) -> Tree:
    tree = Tree()
    tree.feed(page)
    tree.close()
    assert tree.open_tags == []  # every element closed
    return tree


def test_evaluation_shows_tables_and_the_reliability_diagram():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    z = rng.normal(size=(300, 3))
    z[np.arange(300), y] += 2
    result = logloss.evaluate(z, y, class_names=["red", "green", "blue"])
    e = result.evaluation
    tree = parse(result._repr_html_())
    summary = {row[0]: row[1] for row in tree.tables["summary"]}
    assert summary["mean cross-entropy"] == f"{e.loss:.4f}"
    assert summary["accuracy"] == f"{100 * e.accuracy:.2f}%"
    per_class = tree.tables["per-class"]
    assert per_class[0] == ["class", "samples", "accuracy", "mean loss"]
    assert [row[0] for row in per_class[1:]] == ["red", "green", "blue"]
    assert [int(row[1]) for row in per_class[1:]] == np.bincount(y).tolist()
    assert tree.tables["hardest"][1][0] == str(e.hardest.index[0])
    src = tree.images["figure-reliability"]
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as image:
        assert image.format == "PNG"
    assert repr(result).startswith("<EvaluationResult 300 rows, 3 classes: accuracy ")
    assert len(repr(result)) < 160


def test_explanation_shows_one_row_per_class():
    e = explain([2.0, 0.5, -1.0], 1, labels=["a", "b", "c"], torch_reference=False)
    tree = parse(e._repr_html_())
    rows = tree.tables["explanation"]
    assert [row[0] for row in rows[1:]] == ["0 (a)", "1 (b)", "2 (c)"]
    assert [float(row[2]) for row in rows[1:]] == [round(p, 4) for p in e.probabilities]
    assert rows[1][5] == "predicted"
    assert rows[2][5] == "target"
    assert any(f"= {e.loss:.4f} (wrong)" in t for t in tree.text)
    assert (
        repr(e) == "<Explanation of 3 classes: predicted 0 (a) (p 0.7856), target 1 (b), "
        f"loss {e.loss:.4f}>"
    )


def test_mle_result_shows_counts_and_estimates():
    result = logloss.mle("wbwbb", numerical=False)
    tree = parse(result._repr_html_())
    (table,) = tree.tables.values()
    assert table[1:] == [["w", "2", "2/5", "0.4"], ["b", "3", "3/5", "0.6"]]
    assert any("p = 3/5" in t for t in tree.text)
    assert repr(result) == "<MLEResult of 5 outcomes: L = p^3 (1-p)^2, maximum at {w: 2/5, b: 3/5}>"
