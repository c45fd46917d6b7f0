"""The ``isolation`` fixture: worker tests run plainly, under bubblewrap and in docker (sandboxes.py)."""

from __future__ import annotations

import pytest

from sandboxes import require


@pytest.fixture(params=["none", "bwrap", "docker"])
def isolation(request: pytest.FixtureRequest) -> str:
    """Each isolation in turn (the sandboxed ones skip where their tool is missing)."""
    require(request.param)
    return str(request.param)
