"""The schema: Alembic's script directory, and what the revisions need.

* ``env.py``, ``script.py.mako`` and ``versions/``: the Alembic environment
  and the one revision chain for both engines (``script_location =
  orchestrator_db:migrations``);
* :mod:`.triggers`: trigger declarations, derived from the models;
* :mod:`.alembic_ext`: trigger operations, their rendering and autogenerate
  comparison;
* :mod:`.runner`: running the revisions from Python or the command line.
"""
