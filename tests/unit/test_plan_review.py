"""A migration's plan beside what happened (migration_core/plan/review.py), on steps and times made by hand; and the
plan as a migration keeps it, read back the same."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from migration_core.observe.progress import MigrationProgress
from migration_core.plan.estimate import Range, Rates, Workload, estimate
from migration_core.plan.review import PhaseCheck, Verdict, review
from migration_core.plan.survey import DatabasePlan, History, MigrationPlan, Sample, TableSize
from migration_core.state.models import Method, Migration, MigrationOptions, Mode, State, Step, StepKind, utcnow

MB = 1 << 20


def a_plan(mode: Mode = Mode.OFFLINE) -> MigrationPlan:
    work = Workload(tables=4, rows=42_300, heap_bytes=8 * MB, index_bytes=2 * MB, schema_seconds=0.05)
    shop = DatabasePlan(
        "shop",
        12 * MB,
        4,
        42_300,
        8 * MB,
        2 * MB,
        [TableSize("public.order_line", 6 * MB, 30_000)],
        [],
        0.05,
        estimate(work, Rates(100 * MB, 0.001, 2)),
    )
    return MigrationPlan(
        "onprem",
        "azure",
        mode,
        2,
        0.06,
        addresses=("127.0.0.1:5432", "127.0.0.1:5433"),
        databases=[shop],
        sample=Sample("shop", "public.order_line", 6 * MB, 6 * MB, 0.06),
        round_trip=0.001,
        seconds=0.1,
        history=History("mig-1", "shop", Mode.OFFLINE, True, 42_300, 8 * MB, 2 * MB, 0.5, 0.2, 0.1),
    )


def test_a_phase_lands_inside_over_or_under_and_one_under_way_is_only_ever_over() -> None:
    r = Range(1.0, 2.0)
    assert [PhaseCheck("copy", r, t).verdict for t in (1.5, 3.0, 0.5)] == [Verdict.INSIDE, Verdict.OVER, Verdict.UNDER]
    assert PhaseCheck("copy", r, 0.5, running=True).verdict is None  # it may yet land inside
    assert PhaseCheck("copy", r, 2.5, running=True).verdict is Verdict.OVER
    assert PhaseCheck("copy", r).verdict is None


def test_the_plan_a_migration_keeps_reads_back_the_same() -> None:
    plan = a_plan(Mode.ONLINE)
    kept = json.loads(json.dumps(plan.as_dict()))  # as the store keeps a step's data
    assert "preflight" not in kept
    assert MigrationPlan.from_dict(kept) == plan


def test_each_phase_is_set_beside_what_its_step_measured() -> None:
    plan = a_plan()
    began = utcnow() - timedelta(seconds=10)
    m = Migration("mig-2", "onprem", "azure", ["shop"], Mode.OFFLINE, State.COMPLETED, "U0ALICE", created_at=began)
    e = plan.databases[0].estimate
    inside_copy = (e.copy.low + e.copy.high) / 2
    steps = {
        StepKind.IMPORT.at("shop"): Step(
            m.id,
            StepKind.IMPORT.at("shop"),
            "done",
            data={"seconds": 1.0, "phases": {"copying data": inside_copy, "building indexes": e.indexes.high * 3}},
        ),
        StepKind.VERIFY.at("shop"): Step(m.id, StepKind.VERIFY.at("shop"), "done", data={"seconds": 0.0}),
    }
    reached = {"completed": began + timedelta(seconds=plan.total.high * 2)}
    found = review(plan, m, steps, MigrationProgress(), reached, utcnow())
    copy, indexes, verification = found.databases[0].phases
    assert (copy.verdict, indexes.verdict, verification.verdict) == (Verdict.INSIDE, Verdict.OVER, Verdict.UNDER)
    assert found.whole.name == "to completed" and found.whole.verdict is Verdict.OVER
    assert found.whole.took == pytest.approx(plan.total.high * 2, abs=1e-5)
    assert len(found.judged) == 4


def test_while_it_runs_the_whole_run_counts_on_and_a_failure_on_the_way_is_not_compared() -> None:
    plan = a_plan()
    began = utcnow() - timedelta(seconds=3)
    m = Migration("mig-2", "onprem", "azure", ["shop"], Mode.OFFLINE, State.IMPORTING, "U0ALICE", created_at=began)
    running = review(plan, m, {}, MigrationProgress(), {}, utcnow())
    assert running.whole.running and running.whole.took is not None and running.whole.took >= 3
    assert all(c.took is None for c in running.databases[0].phases)  # nothing measured yet

    m.state = State.COMPLETED
    retried = {"failed": began + timedelta(seconds=1), "completed": began + timedelta(seconds=2)}
    whole = review(plan, m, {}, MigrationProgress(), retried, utcnow()).whole
    assert whole.took is None and "failed" in whole.note


def test_the_dump_method_has_no_index_phase_of_its_own() -> None:
    plan = a_plan()
    options = MigrationOptions(method=Method.DUMP)
    m = Migration("mig-2", "onprem", "azure", ["shop"], Mode.OFFLINE, State.COMPLETED, "U0A", options=options)
    steps = {
        StepKind.IMPORT.at("shop"): Step(
            m.id, StepKind.IMPORT.at("shop"), "done", data={"seconds": 1.0, "phases": {"loading data": 0.2}}
        )
    }
    copy, indexes, _ = review(plan, m, steps, MigrationProgress(), {}, utcnow()).databases[0].phases
    assert copy.took == 0.2 and indexes.took is None and "dump method" in indexes.note
