"""Configuration: every mistake is reported with the key that holds it."""

from __future__ import annotations

import pytest

from bot.settings import SettingsError, load_settings, require_slack

GOOD = """
[slack]
notify_channel = "C0123456789"
approvers = ["U01APPROVER", "S01GROUP"]
required_approvals = 2
operators = []

[servers.onprem-sales]
host = "10.0.0.5"
port = 5432
user = "migrator"
password_env = "ONPREM_SALES_PASSWORD"
sslmode = "prefer"

[servers.azure-sales]
host = "mysrv.postgres.database.azure.com"
user = "pgadmin"
password_env = "AZURE_SALES_PASSWORD"
sslmode = "require"
"""


def load(tmp_path, text: str, **env: str):
    path = tmp_path / "pgmig.toml"
    path.write_text(text)
    return load_settings({"PGMIG_CONFIG": str(path), **env})


def test_the_documented_example_loads(tmp_path):
    s = load(tmp_path, GOOD, PORT="8080", PGMIG_STATE="postgresql://u:pw@127.0.0.1/state")
    assert s.port == 8080 and s.state_url.startswith("postgresql://")
    assert s.policy.approvers == ("U01APPROVER", "S01GROUP") and s.policy.required_approvals == 2
    assert s.servers["onprem-sales"].address == "10.0.0.5:5432"
    assert s.servers["azure-sales"].port == 5432 and s.servers["azure-sales"].sslmode == "require"


def test_the_shipped_example_file_loads(tmp_path):
    from pathlib import Path

    example = (Path(__file__).parents[2] / "pgmig.example.toml").read_text()
    s = load(tmp_path, example)
    assert "azure-sales" in s.servers and not s.azure.enabled


AZURE = (
    GOOD
    + """
[azure]
resource_group = "rg-data"
region = "westeurope"
provision_requires_approval = true
poll_seconds = 2
"""
)


def test_azure_section_with_the_environment_on_top(tmp_path):
    s = load(tmp_path, AZURE)
    assert not s.azure.enabled and s.azure.arm_endpoint == "https://management.azure.com"
    s = load(tmp_path, AZURE, AZURE_SUBSCRIPTION_ID="sub-1", PGMIG_ARM_ENDPOINT="https://127.0.0.1:8443")
    assert s.azure.enabled and s.azure.subscription_id == "sub-1" and s.azure.arm_endpoint == "https://127.0.0.1:8443"
    assert s.azure.provision_requires_approval and s.azure.poll_seconds == 2 and s.azure.resource_group == "rg-data"


@pytest.mark.parametrize(
    "change, message",
    [
        (("poll_seconds = 2", "poll_seconds = -1"), "azure.poll_seconds"),
        (("poll_seconds = 2", "pol_seconds = 2"), "azure.pol_seconds: unknown key (did you mean `poll_seconds`?)"),
        (("provision_requires_approval = true", "provision_requires_approval = 1"), "expected true or false"),
        (("poll_seconds = 2", 'arm_endpoint = "http://arm.local"'), "azure.arm_endpoint: expected an https:// URL"),
        (("poll_seconds = 2", 'ca_file = "/nonexistent/ca.pem"'), "azure.ca_file: /nonexistent/ca.pem does not exist"),
    ],
)
def test_bad_azure_config_names_the_key(tmp_path, change, message):
    with pytest.raises(SettingsError) as err:
        load(tmp_path, AZURE.replace(*change, 1))
    assert message in str(err.value)


@pytest.mark.parametrize(
    "change, message",
    [
        (("port = 5432", 'port = "x"'), "servers.onprem-sales.port: expected an integer"),
        (("port = 5432", "port = 70000"), "servers.onprem-sales.port: expected 1–65535"),
        (('sslmode = "prefer"', 'sslmode = "sometimes"'), "servers.onprem-sales.sslmode: expected one of"),
        (('host = "10.0.0.5"', 'hots = "10.0.0.5"'), "servers.onprem-sales.hots: unknown key (did you mean `host`?)"),
        (("required_approvals = 2", "required_approvals = 0"), "slack.required_approvals: expected at least 1"),
        (('"S01GROUP"', '"alice"'), "slack.approvers: 'alice' is not a Slack user"),
        (("[slack]", "[slak]"), "slak: unknown key (did you mean `slack`?)"),
        (('password_env = "ONPREM_SALES_PASSWORD"', 'password_env = "X"\npassword_file = "/f"'), "not both"),
        (("[servers.onprem-sales]", '[servers."on prem"]'), "a server name is letters"),
        (("port = 5432", "port = 5432\n[oops"), "not valid TOML"),
        (("port = 5432", "port = 5432\nquery_timeout = 0"), "servers.onprem-sales.query_timeout: expected seconds > 0"),
        (("[slack]", "[migration]\nstall_seconds = 0\n[slack]"), "migration.stall_seconds: expected a number > 0"),
        (("[slack]", '[migration]\nsplit_table_mb = "1G"\n[slack]'), "migration.split_table_mb: expected a number"),
    ],
)
def test_bad_config_names_the_key(tmp_path, change, message):
    with pytest.raises(SettingsError) as err:
        load(tmp_path, GOOD.replace(*change, 1))
    assert message in str(err.value)


def test_missing_config_file_says_what_to_do(tmp_path):
    with pytest.raises(SettingsError, match="pgmig init` writes a commented one"):
        load_settings({"PGMIG_CONFIG": str(tmp_path / "absent.toml")})


def test_serving_slack_names_the_missing_credentials(tmp_path):
    s = load(tmp_path, GOOD)
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET"):
        require_slack(s, socket_mode=False)
    s = load(tmp_path, GOOD, SLACK_BOT_TOKEN="xoxb-1")
    with pytest.raises(SettingsError, match="SLACK_APP_TOKEN"):
        require_slack(s, socket_mode=True)


def test_replication_address_reaches_the_subscription(tmp_path):
    from migration_core.changes.replication import subscription_conninfo

    s = load(
        tmp_path,
        GOOD.replace(
            'sslmode = "prefer"', 'sslmode = "prefer"\nreplication_host = "203.0.113.7"\nreplication_port = 6432', 1
        ),
    )
    info = subscription_conninfo(s.servers["onprem-sales"], "sales db", "pgmig_x_rep", "pw'quote")
    assert "host='203.0.113.7'" in info and "port='6432'" in info and "password='pw\\'quote'" in info
    assert "dbname='sales db'" in info and "user='pgmig_x_rep'" in info
    assert "host='10.0.0.5'" in subscription_conninfo(
        s.servers["azure-sales"].__class__(name="x", host="10.0.0.5"), "sales", "r", "p"
    )


def test_limits_on_data_work_reach_the_engine_config(tmp_path):
    s = load(
        tmp_path,
        GOOD.replace("port = 5432", "port = 5432\nquery_timeout = 5").replace(
            "[slack]", "[migration]\nstall_seconds = 30\nsplit_table_mb = 64\n[slack]"
        ),
    )
    assert s.servers["onprem-sales"].query_timeout == 5 and s.servers["azure-sales"].query_timeout == 60
    assert (s.migration.stall_seconds, s.migration.split_table_mb) == (30, 64)
