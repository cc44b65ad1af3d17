"""Drivers and the Provider factory."""
