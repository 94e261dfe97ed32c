"""Feed MyST-NB's execution-statistics table (``{nb-exec-table}``) from papermill's records.

The book renders stored outputs (``execute_notebooks: "off"``); the notebooks are executed by
papermill (``make notebooks``), which writes into each notebook's metadata when it ran, for how
long and whether it raised. MyST-NB fills its table only from executions of its own, so with
execution off the table would stay empty. This extension hands papermill's record of each
notebook to MyST-NB as that notebook's execution data, method "papermill".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _timestamp(iso: str | None) -> float:
    if not iso:
        return 0.0
    when = datetime.fromisoformat(iso)
    if when.tzinfo is None:  # papermill writes UTC
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def papermill_exec_data(notebook: dict[str, Any]) -> dict[str, Any] | None:
    """MyST-NB's ``ExecutionResult`` for a notebook that papermill executed (None otherwise)."""
    pm = notebook.get("metadata", {}).get("papermill")
    if not pm or not pm.get("end_time"):
        return None
    failed = bool(pm.get("exception"))
    return {
        "mtime": _timestamp(pm.get("end_time")),
        "runtime": pm.get("duration"),
        "method": "papermill",
        "succeeded": not failed,
        "error": "papermill recorded an exception" if failed else None,
        "traceback": None,
    }


def _record(app, doctree) -> None:
    from myst_nb.sphinx_ import NbMetadataCollector

    env = app.env
    source = Path(env.doc2path(env.docname))
    if source.suffix != ".ipynb":
        return
    data = papermill_exec_data(json.loads(source.read_text(encoding="utf-8")))
    if data is not None:
        NbMetadataCollector.set_exec_data(env, env.docname, data)


def setup(app) -> dict[str, Any]:
    app.connect("doctree-read", _record)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
