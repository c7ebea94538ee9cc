"""Execute notebooks/quickstart.ipynb from top to bottom with nbclient."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_notebook_runs():
    notebook = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    )
    client.execute()

    outputs = [
        output.get("text", "")
        for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    ]
    text = "".join(outputs)
    assert "matched linguistic prototype" in text
    assert "prototype times" in text
    images = [
        output for cell in notebook.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
    ]
    assert len(images) == 2
