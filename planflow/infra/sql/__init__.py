"""What the SQL drivers share: units of work, repositories written once, row mapping, migrations."""
