"""Small notebooks for tests of the run machinery (papermill, schedules, sweeps)."""

from __future__ import annotations

from pathlib import Path


def write_notebook(path: str | Path, parameters: str, *cells: str) -> Path:
    """Write a notebook on the ``quantlab`` kernel: a cell tagged ``parameters`` with the
    `parameters` source, then one code cell per item of `cells`."""
    import nbformat

    nb = nbformat.v4.new_notebook()  # type: ignore[no-untyped-call]
    nb.cells = [
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),  # type: ignore[no-untyped-call]
        *(nbformat.v4.new_code_cell(c) for c in cells),  # type: ignore[no-untyped-call]
    ]
    nb.metadata["kernelspec"] = {
        "name": "quantlab",
        "display_name": "Python (quantlab)",
        "language": "python",
    }
    path = Path(path)
    nbformat.write(nb, str(path))  # type: ignore[no-untyped-call]
    return path
