"""The engine's tunables and what a new migration asks for (kept apart so flows can read them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from migration_core.state.errors import MigrationError
from migration_core.state.models import DEFAULT_PARALLEL, Backend, DdlCapture, Method, Mode
from migration_core.transfer.limits import DataLimits


@dataclass
class EngineConfig:
    workdir: Path
    pg_bindir: str | None = None
    progress_interval: float = 15.0
    default_parallel: int = DEFAULT_PARALLEL
    fence_grace_seconds: float = 5.0  # cutover: sessions may finish this long before they are ended
    catch_up_timeout_seconds: float = 30.0  # cutover: longest wait for the target after the fence
    ready_lag_seconds: float = 5.0  # online: ready for cutover below this lag…
    ready_lag_bytes: int = 8 << 20  # …and this many bytes behind
    lag_alert_seconds: float = 60.0  # alert when lag stays above these
    lag_alert_bytes: int = 256 << 20
    wal_retention_alert_bytes: int = 1 << 30  # alert when a slot holds this much WAL on the source
    slot_warn_share: float = 0.5  # slot guardian: warn above this share of max_slot_wal_keep_size…
    slot_warn_minutes: float = 60.0  # …or when the slot reaches it sooner than this
    max_window_seconds: float = 0.0  # cutover: refuse one whose predicted write freeze is longer; 0: no limit
    verify_chunk_rows: int = 10_000  # continuous verification: rows in one key range; 0: off
    require_verified_share: float = 1.0  # a cutover request waits for this share verified while streaming
    capture_ddl: bool = True  # online: capture schema changes on the source (or detect drift), gate them
    ddl_auto_apply: tuple[str, ...] = ()  # additive kinds of captured changes pgmig applies itself (observe/ddl.py)
    slot_stall_seconds: float = 60.0  # a subscriber that confirmed nothing while WAL grew this long applies nothing
    digest: str = "off"  # off | hourly | daily: a summary of active migrations
    managed_poll_seconds: float = 10.0  # --backend flex|dms: how often the Azure service is asked
    lease_seconds: float = 60.0  # several replicas: a migration whose owner is silent this long
    # is taken over by another (checked every quarter lease)
    replica_id: str = ""  # this replica's stable identity; its earlier lives' leases are taken
    # over at once (empty: a fresh one, as for a new replica)
    max_auto_restarts: int = 5  # a migration pgmig keeps dying in is failed after this many restarts
    leftover_check_seconds: float = 60.0  # how often slots of migrations nobody runs are looked for
    keep_exports: bool = False  # keep export files after a migration completed or was cancelled
    command_poll_seconds: float = 0.5  # several replicas: how often commands queued for ours are looked for
    command_wait_seconds: float = 20.0  # how long a replica waits for the one holding a migration to answer
    limits: DataLimits = field(default_factory=DataLimits)  # data work: stall detection, table splitting


@dataclass(frozen=True)
class Conflict:
    """An option that does not go with the others: which (a `MigrationRequest` field) and why, in the words
    of the typed command."""

    option: str
    message: str


OFFLINE_ONLY = (
    "`--method dump` and `--pause-after-export` are for offline migrations; an online migration streams its data"
)


@dataclass
class MigrationRequest:
    source: str
    target: str
    mode: Mode
    requested_by: str
    channel: str = ""
    databases: list[str] = field(default_factory=list)
    method: Method = Method.RESTORE
    parallel: int | None = None
    overwrite: bool = False
    pause_after_export: bool = False
    replica_identity_full: bool = False
    backend: Backend = Backend.NATIVE
    runtime_server: str = ""  # flex backend: the runtime server's resource id, for private networks
    capture_ddl: DdlCapture = DdlCapture.DEFAULT  # online: capture schema changes or not, whatever [online] says

    def conflicts(self) -> list[Conflict]:
        """Every option that does not go with the others (mode, method, pause, backend), most telling first."""
        online, dump, pause = self.mode == Mode.ONLINE, self.method == Method.DUMP, self.pause_after_export
        found: list[Conflict] = []
        if online and dump:
            found.append(Conflict("method", OFFLINE_ONLY))
        if online and pause:
            found.append(Conflict("pause_after_export", OFFLINE_ONLY))
        if self.replica_identity_full and not online:
            found.append(Conflict("replica_identity_full", "`--replica-identity-full` is for online migrations"))
        if self.capture_ddl is not DdlCapture.DEFAULT and not online:
            flag = "--no-capture-ddl" if self.capture_ddl is DdlCapture.OFF else "--capture-ddl"
            found.append(
                Conflict(
                    "capture_ddl",
                    f"`{flag}` is for online migrations: an offline one streams nothing, so there are no schema "
                    "changes to capture",
                )
            )
        if pause and not online and not dump:
            found.append(
                Conflict(
                    "pause_after_export",
                    "`--pause-after-export` goes with `--method dump`: its export is the SQL files you can "
                    "review and edit",
                )
            )
        if self.source == self.target:
            found.append(Conflict("target", "SOURCE and TARGET are the same server"))
        if self.backend == Backend.DMS and not online:
            found.append(
                Conflict(
                    "backend",
                    "Azure DMS classic migrates PostgreSQL online only: use `--mode online`, or "
                    "`--backend flex` / `--backend native` for an offline migration",
                )
            )
        if self.backend != Backend.NATIVE and (dump or pause):
            found.append(
                Conflict(
                    "backend",
                    f"`--method dump` and `--pause-after-export` are pgmig's own export; the "
                    f"{Backend(self.backend).value} backend copies by itself",
                )
            )
        return found

    def validate(self) -> None:
        """Raise a MigrationError telling the first conflict, if any."""
        if found := self.conflicts():
            raise MigrationError(found[0].message)
