"""The integration tier's order (tests/integration/conftest.py): the longest modules first, by name. A renamed
or removed module would silently fall to the end of the run, where a long one keeps the machine waiting."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import LONGEST_FIRST

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"


def test_every_module_named_longest_first_exists_once():
    assert len(set(LONGEST_FIRST)) == len(LONGEST_FIRST)
    missing = [name for name in LONGEST_FIRST if not (INTEGRATION / f"{name}.py").is_file()]
    assert not missing, f"LONGEST_FIRST names modules that are not there: {missing}"
