"""The package's SQL, as SQLAlchemy statements, in one place.

* :mod:`.claim`: the claim shape shared by the task queue and the outbox;
* :mod:`.queue`: the task queue (claim, the owner's actions, release of
  dependents, cancellation, expiry);
* :mod:`.outbox`: the event outbox (claim, mark processed);
* :mod:`.upsert`: insert-or-update, per dialect;
* :mod:`.replication`: what a read replica is asked (its lag).

Statements are built once per dialect and variant and run with parameters:
building SQLAlchemy expressions costs more than running them. Builders take
the dialect's name where the SQL differs; nothing above them does.
"""

#: How many ids one statement binds at most (an expanding IN): the package
#: splits longer lists, so that no statement nears the engines' limits on
#: arguments (32,767 on PostgreSQL).
IDS_PER_STATEMENT = 10_000
