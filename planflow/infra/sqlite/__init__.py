"""The SQLite driver (stdlib ``sqlite3``): the embedded default."""
