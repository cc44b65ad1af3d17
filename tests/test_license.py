"""The LICENSE file exists and is the license pyproject.toml declares (MIT); tests/test_packaging.py checks the
wheel carries it."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_file_is_the_mit_license_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    text = (ROOT / "LICENSE").read_text()

    assert declared == "MIT"  # an SPDX expression (PEP 639)
    assert text.startswith("MIT License\n")
    assert "Permission is hereby granted, free of charge" in text
