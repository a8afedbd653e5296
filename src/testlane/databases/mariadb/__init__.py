"""Per-test isolation for MariaDB/MySQL: the same ideas as for Postgres, built from what MySQL offers.

* :mod:`.sqlfiles` — ``.sql`` migration files run statement by statement (``DELIMITER`` aware), a
  failure named by file, line, statement and server error;
* :mod:`.template` — the migrated template ``tl_tpl_<hash>``, built once per server under a
  ``GET_LOCK`` named lock and marked ready only after every file succeeded;
* :mod:`.clone` — cloning the template (MySQL has no ``CREATE DATABASE ... TEMPLATE``): its DDL read
  once, replayed into each clone in one multi-statement round trip, rows copied only where there are any;
* :mod:`.engine` — the :class:`~testlane.databases.engine.DatabaseEngine` the shared
  :class:`~testlane.databases.pool.ClonePool` clones with (ahead, in the background); used clones are dropped;
* :mod:`.transaction` — a PyMySQL connection whose commits are savepoints of a rolled-back
  transaction, refusing the statements that would commit implicitly;
* :mod:`.testdb` — :class:`MysqlTestDatabase`, what a test gets.
"""
