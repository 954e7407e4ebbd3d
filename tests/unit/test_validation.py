"""`/pgmig provision`'s rules, checked before anything reaches Azure."""

from __future__ import annotations

import pytest

from migration_core.azure.validation import ProvisionArgs, validate
from migration_core.errors import MigrationError

GOOD = dict(
    name="sales-prod",
    admin_user="pgadmin",
    admin_password_env="ADMIN_PW",
    resource_group="rg-data",
    region="westeurope",
    storage_gb="128",
)


@pytest.fixture(autouse=True)
def _password(monkeypatch):
    monkeypatch.setenv("ADMIN_PW", "Str0ng-Admin-Pw")


def test_a_good_request_is_typed():
    req = validate(ProvisionArgs(**GOOD), source_major=15, allowed_envs={"ADMIN_PW"})
    assert (req.name, req.tier, req.storage_gb, req.ha) == ("sales-prod", "GeneralPurpose", 128, "Disabled")


@pytest.mark.parametrize(
    "change, rule",
    [
        ({"name": "Sales_Prod"}, "server name"),
        ({"version": "14"}, "older than the source's PostgreSQL 15"),
        ({"storage_gb": "100"}, "storage"),
        ({"tier": "Burstable", "sku": "Standard_B1ms", "ha": "zone-redundant"}, "not offered on the Burstable tier"),
        ({"tier": "Platinum"}, "tier `Platinum`"),
        ({"firewall": ["office=203.0.113.1-203.0.113.2"]}, "only apply with --public-access"),
    ],
)
def test_each_broken_rule_is_named(change, rule):
    with pytest.raises(MigrationError) as err:
        validate(ProvisionArgs(**{**GOOD, **change}), source_major=15, allowed_envs={"ADMIN_PW"})
    assert rule in str(err.value)


def test_a_variable_the_config_does_not_allow_is_never_read(monkeypatch):
    for value in ("short", "Str0ng-Other-Pw"):
        monkeypatch.setenv("SOMEONE_ELSES", value)
        with pytest.raises(MigrationError) as err:
            validate(ProvisionArgs(**{**GOOD, "admin_password_env": "SOMEONE_ELSES"}), allowed_envs={"ADMIN_PW"})
        assert "is not one of [azure] admin_password_envs" in str(err.value) and value not in str(err.value)
