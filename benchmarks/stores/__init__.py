"""The three implementations every SQL workload runs: planflow, raw driver code, SQLAlchemy ORM."""
