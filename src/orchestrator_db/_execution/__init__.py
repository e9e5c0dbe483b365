"""The execution layer: the one place where statements meet a database.

Everything the package sends to a database, and every error that comes back,
passes through here:

* :mod:`.backend`, :mod:`.sqlite`, :mod:`.postgresql`: one backend per
  database engine: how its engines are built (pool, pragmas, BEGIN modes,
  read-only units), how a statement goes straight to its driver, how large
  batches are inserted (COPY on PostgreSQL), and how its driver's errors read;
* :mod:`.aiosqlite_adapter`: the lean aiosqlite adapter the SQLite backend
  runs on (one thread hop per statement, or none with inline execution);
* :mod:`.engines`: engines built from :class:`~orchestrator_db.settings.DatabaseSettings`;
* :mod:`.compiled`: statements compiled once per dialect, with their value
  conversions, for the direct path;
* :mod:`.rows`: rows turned into model objects without the ORM's loader;
* :mod:`.bulk`: the parameter rows of a bulk insert;
* :mod:`.errors`: driver and SQLAlchemy errors turned into
  :mod:`orchestrator_db.errors`, and the boundary that applies it;
* :mod:`.executor`: the executors: a unit of work's (its session, its
  connection, its fail-closed state) and a queue worker's (one connection).

Nothing above this layer catches a database error or names a dialect to
decide how to run a statement.
"""
