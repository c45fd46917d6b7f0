"""The master's timestamps: ISO 8601 in UTC to the millisecond, as the API and dashboard parse them."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone

from rvidia.master.auth import now_iso


def test_now_iso_is_utc_to_the_millisecond_and_moves_forward() -> None:
    seen = []
    for _ in range(2000):
        text = now_iso()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
        seen.append(text)
    assert seen == sorted(seen)  # the cached second never lags its milliseconds
    parsed = datetime.fromisoformat(now_iso().replace("Z", "+00:00"))
    assert abs((datetime.now(timezone.utc) - parsed).total_seconds()) < 1
    time.sleep(1.01)
    assert now_iso() > seen[-1]
