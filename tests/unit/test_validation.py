"""`/pgmig provision`'s rules, checked before anything reaches Azure."""

from __future__ import annotations

import pytest

from migration_core.azure.validation import ProvisionArgs, validate
from migration_core.state.errors import MigrationError

GOOD = dict(
    name="sales-prod",
    admin_user="pgadmin",
    admin_password_env="ADMIN_PW",
    resource_group="rg-data",
    region="westeurope",
    storage_gb="128",
    network="public",
    firewall=["pgmig=198.51.100.7"],
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
        ({"network": "vnet"}, "only apply with --public-access"),
        ({"network": None}, "say how pgmig reaches the new server"),
        ({"firewall": []}, "a public server accepts no connection until a firewall rule allows it"),
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


@pytest.mark.parametrize("size", ["²", "１２８", "١٢٨", "9" * 5000, "12.5", "-128", "", "1e3"])
def test_a_size_that_is_not_a_plain_whole_number_gets_the_rule_not_a_crash(size):
    """str.isdigit() takes `²` and other scripts' digits, which int() refuses, and int() refuses 5,000 digits."""
    with pytest.raises(MigrationError) as err:
        validate(ProvisionArgs(**{**GOOD, "storage_gb": size}), allowed_envs={"ADMIN_PW"})
    assert "a whole number of GB, one of 32, 64, 128" in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("sku", ["GP_Gen5_" + "4" * 5000, "Standard_D٤ds_v5", "Standard_B²ms"])
def test_a_sku_with_odd_digits_gets_the_rule_not_a_crash(sku):
    with pytest.raises(MigrationError) as err:
        validate(ProvisionArgs(**{**GOOD, "sku": sku}), allowed_envs={"ADMIN_PW"})
    assert "is not a GeneralPurpose SKU" in str(err.value)


def test_the_admin_user_never_decides_whether_a_password_is_refused(monkeypatch):
    """Held against a name the requester picks, the password would answer "does it contain this text?":
    whatever the admin user, a password is refused for what it is alone, with the same words."""
    users = ("pgadmin", "Str0ng", "admin_pw", "zzzz", "STR0NG_ADMIN")  # some occur in the password, some not
    for user in users:
        req = validate(ProvisionArgs(**{**GOOD, "admin_user": user}), allowed_envs={"ADMIN_PW"})
        assert req.admin_user == user
    monkeypatch.setenv("ADMIN_PW", "short-1")
    refusals = set()
    for user in users:
        with pytest.raises(MigrationError) as err:
            validate(ProvisionArgs(**{**GOOD, "admin_user": user}), allowed_envs={"ADMIN_PW"})
        refusals.add(str(err.value))
    assert refusals == {
        "cannot provision: the password in ADMIN_PW does not meet Azure's password rules: 8–128 characters, "
        "characters from at least three of uppercase, lowercase, digits and symbols, and not containing the "
        "admin user name"
    }
