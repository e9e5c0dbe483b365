"""procrastinate's app and task for ``bench/queue_peers.py``: a module of
their own, so that its worker processes import them by name. The database
is ``$ODB_BENCH_PROCRASTINATE_DSN``, set before the first import."""

from __future__ import annotations

import os

import procrastinate

DSN_VARIABLE = "ODB_BENCH_PROCRASTINATE_DSN"
app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=os.environ.get(DSN_VARIABLE, ""))
)
done = [0]


@app.task(name="noop")
async def noop() -> None:
    done[0] += 1
