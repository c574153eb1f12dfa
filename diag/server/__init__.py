"""The optional team run server: uploads into PostgreSQL (``diag serve``), queries over it
(``diag runs --server``), and server runs materialised as local stores (replay, compare, export).
Needs the ``server`` extra (psycopg 3)."""
