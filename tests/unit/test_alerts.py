"""`Alerts`: a condition is said when it starts and when it clears, and a raised alert's chart comes at most once
per `chart_every` per migration, however often the condition comes and goes."""

from __future__ import annotations

import asyncio

from migration_core.observe.progress import MigrationProgress
from migration_core.state.events import NoEvents
from migration_core.state.ledger import Alerts, Ledger
from migration_core.state.models import Migration, State


class Told(NoEvents):
    def __init__(self) -> None:
        self.alerts: list[str] = []
        self.charts: list[tuple[str, str]] = []

    async def alert(self, migration: Migration, progress: MigrationProgress, text: str, offer_cancel: bool = False):
        self.alerts.append(text)

    async def chart(self, migration: Migration, progress: MigrationProgress, moment: str) -> None:
        self.charts.append((migration.id, moment))


async def test_an_alert_that_flaps_is_said_each_time_but_charted_once_per_period(store):
    told = Told()
    ledger = Ledger(store, told)
    alerts = Alerts(ledger, chart_every=0.5)
    a = Migration("mig-1", "a", "b", ["db"], "online", State.CATCHING_UP, "U1")
    b = Migration("mig-2", "a", "b", ["db"], "online", State.CATCHING_UP, "U1")
    for _ in range(3):  # lag around its threshold: raised, cleared, raised…
        await alerts.alert(a, "lag", True, "lag high")
        await alerts.alert(a, "lag", True, "lag high")  # still raised: not said again
        await alerts.alert(a, "lag", False, "")
    await alerts.alert(a, "wal", True, "WAL held")  # another kind, the same migration: within the period
    await alerts.alert(b, "lag", True, "lag high")  # another migration: its own period
    await ledger.charted(5)
    assert told.alerts.count("lag high") == 4 and told.alerts.count("✅ back to normal: lag (mig-1)") == 3
    assert told.charts == [("mig-1", "lag alert"), ("mig-2", "lag alert")]
    await asyncio.sleep(0.6)  # the period is over: the next raised alert is charted again
    await alerts.alert(a, "lag", True, "lag high")
    await ledger.charted(5)
    assert told.charts[-1] == ("mig-1", "lag alert") and len(told.charts) == 3
