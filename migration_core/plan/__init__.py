"""The plan before the apply: what a migration would move, its pre-flight, and how long it would take."""

from migration_core.plan.estimate import Estimate, Range, range_text, seconds_text
from migration_core.plan.survey import DatabasePlan, History, KeylessTable, MigrationPlan, Sample, TableSize

__all__ = [
    "DatabasePlan",
    "Estimate",
    "History",
    "KeylessTable",
    "MigrationPlan",
    "Range",
    "Sample",
    "TableSize",
    "range_text",
    "seconds_text",
]
