"""An app folder per test, whose daemon is stopped afterwards whatever happened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_runner import run_taxiway as taxiway


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "app"
    folder.mkdir()
    yield folder
    taxiway(folder, "down")
