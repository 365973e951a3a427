"""The store: the only place that builds or runs SQL.

- queries.py loads the named blocks of pgqueue/sql/*.sql (the readable source);
- statements.py turns each into a typed function returning a Statement (SQL, parameters, row type), pure;
- rows.py names every row a statement returns;
- run.py runs Statements (and plans of several) on sync and async connections;
- connections.py runs them on the caller's connection and opens pgqueue's own; database.py holds the pools;
- errors.py maps driver errors to pgqueue's, once;
- schema.py (metadata, job statuses, channels), migrate.py, grants.py, admin.py (operator actions),
  embedded.py (the zero-set-up server).
"""
