"""The package version (one place, read by the CLI, telemetry and packaging)."""

__version__ = "0.1.0"
