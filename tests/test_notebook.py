"""docs/predictions.ipynb runs from top to bottom in a fresh kernel (nbclient) and its outputs
say what the text says: logloss's numbers equal scikit-learn's, the evaluation and the
explanation display as HTML tables, the figures as PNG images."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "predictions.ipynb"


@pytest.fixture(scope="module")
def executed():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=False)
    client.execute(cwd=str(NOTEBOOK.parent))
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def outputs(cell, kind):
    return [o for o in cell.outputs if kind in o.get("data", {}) or o.get("name") == kind]


@pytest.mark.slow
def test_notebook_runs_and_its_outputs_hold(executed):
    mle, _, evaluation, compared, concentration, hardest, explained, calibrated = executed
    assert "p^3 (1-p)^2" in outputs(mle, "text/html")[0]["data"]["text/html"]
    page = outputs(evaluation, "text/html")[0]["data"]["text/html"]
    assert 'id="summary"' in page
    assert 'id="figure-reliability"' in page
    text = "".join(o["text"] for o in outputs(compared, "stdout"))
    assert "loss equal to sklearn: True" in text
    assert "brier equal to sklearn: True" in text
    assert 'id="explanation"' in outputs(explained, "text/html")[0]["data"]["text/html"]
    assert "T = " in "".join(o["text"] for o in outputs(calibrated, "stdout"))
    for cell in (concentration, hardest, calibrated):
        (png,) = outputs(cell, "image/png")
        with Image.open(io.BytesIO(base64.b64decode(png["data"]["image/png"]))) as image:
            assert image.format == "PNG"
            assert min(image.size) > 100
