"""The `[azure]` settings: which subscription, cloud (ARM endpoint, authority host, token scope) and
api-versions, defaults for provisioning, DMS classic."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Pinned, not whatever the installed SDK defaults to: the versions the fake ARM models from the published
# REST API specifications (Azure/azure-rest-api-specs), so a new SDK release cannot change the wire format
# under a migration that runs for days. `[azure] api_versions` overrides them per namespace.
PG_API_VERSION = "2025-08-01"  # Microsoft.DBforPostgreSQL flexible servers (stable/2025-08-01/openapi.json)
DMS_API_VERSION = "2025-06-30"  # Microsoft.DataMigration (stable/2025-06-30)
RESOURCES_API_VERSION = "2021-04-01"  # Microsoft.Resources providers: registration state, register
AUTHORIZATION_API_VERSION = "2022-04-01"  # Microsoft.Authorization permissions: what the identity may do


@dataclass(frozen=True)
class Cloud:
    """An Azure cloud as the SDKs see it: ARM endpoint, the token scope azure-mgmt-core uses for it (not
    always the endpoint's: US Gov's is management.core.usgovcloudapi.net) and its Entra authority host."""

    name: str
    arm_endpoint: str
    scope: str
    authority_host: str


CLOUDS = (
    Cloud("AzureCloud", "https://management.azure.com", ARM_SCOPE, "login.microsoftonline.com"),
    Cloud(
        "AzureUSGovernment",
        "https://management.usgovcloudapi.net",
        "https://management.core.usgovcloudapi.net/.default",
        "login.microsoftonline.us",
    ),
    Cloud(
        "AzureChinaCloud",
        "https://management.chinacloudapi.cn",
        "https://management.chinacloudapi.cn/.default",
        "login.chinacloudapi.cn",
    ),
)


def known_cloud(endpoint: str) -> Cloud | None:
    base = endpoint.rstrip("/").lower()
    return next((c for c in CLOUDS if c.arm_endpoint == base), None)


@dataclass(frozen=True)
class AzureConfig:
    subscription_id: str = ""
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
    authority_host: str = ""  # Entra ID host for the token (default: the cloud's, from arm_endpoint)
    credential_scope: str = ""  # the token's scope (default: the cloud's, from arm_endpoint)
    resource_group: str = ""  # default for provision and the backends
    region: str = ""
    provision_requires_approval: bool = False
    poll_seconds: float = 10.0  # how often a long-running Azure operation is checked
    progress_seconds: float = 15.0  # how often provisioning progress is shown in the channel
    dms_service: str = "pgmig-dms"  # Azure DMS classic service, created when missing
    dms_sku: str = "Premium_4vCores"  # online migrations need a Premium SKU
    dms_subnet: str = ""  # DMS classic runs in a VNet subnet (resource id)
    ca_file: str = ""  # a private CA for the ARM endpoint (default: $SSL_CERT_FILE)
    admin_password_envs: tuple[str, ...] = ()  # the variables /pgmig provision may read an admin password from
    pg_api_version: str = PG_API_VERSION
    dms_api_version: str = DMS_API_VERSION

    def __post_init__(self) -> None:
        envs = self.admin_password_envs
        if isinstance(envs, str) or not all(isinstance(e, str) and ENV_NAME.match(e) for e in envs):
            raise ValueError(f"azure.admin_password_envs: expected a list of environment variable names, got {envs!r}")
        object.__setattr__(self, "admin_password_envs", tuple(envs))

    @property
    def enabled(self) -> bool:
        return bool(self.subscription_id)

    @property
    def cloud(self) -> Cloud | None:
        """The known cloud whose ARM endpoint this is (None: a private or test endpoint)."""
        return known_cloud(self.arm_endpoint)

    @property
    def scope(self) -> str:
        """The token scope: as configured, else the known cloud's (azure-mgmt-core's table), else the
        endpoint's own `/.default` (Azure Stack and private clouds name their audience that way)."""
        if self.credential_scope:
            return self.credential_scope
        cloud = self.cloud
        if cloud is not None:
            return cloud.scope
        if "127.0.0.1" in self.arm_endpoint or "localhost" in self.arm_endpoint:
            return ARM_SCOPE  # a local stand-in for the public cloud (tests)
        return self.arm_endpoint.rstrip("/") + "/.default"

    @property
    def authority(self) -> str:
        """The Entra ID host tokens come from: as configured, else the known cloud's, else the public one."""
        if self.authority_host:
            return self.authority_host
        cloud = self.cloud
        return cloud.authority_host if cloud is not None else "login.microsoftonline.com"

    @property
    def verify(self) -> str | bool:
        return self.ca_file or os.environ.get("SSL_CERT_FILE") or True


ENVIRONMENT = {  # variable → [azure] key; the standard azure-identity name where there is one
    "AZURE_SUBSCRIPTION_ID": "subscription_id",
    "PGMIG_ARM_ENDPOINT": "arm_endpoint",
    "AZURE_AUTHORITY_HOST": "authority_host",
    "PGMIG_ARM_SCOPE": "credential_scope",
    "PGMIG_PG_API_VERSION": "pg_api_version",
    "PGMIG_DMS_API_VERSION": "dms_api_version",
}


def from_environment(values: dict, env: Mapping[str, str] | None = None) -> AzureConfig:
    """The `[azure]` table with the environment on top: AZURE_SUBSCRIPTION_ID, PGMIG_ARM_ENDPOINT,
    AZURE_AUTHORITY_HOST (azure-identity's own variable), PGMIG_ARM_SCOPE, PGMIG_PG_API_VERSION,
    PGMIG_DMS_API_VERSION."""
    env = os.environ if env is None else env
    values = dict(values)
    for variable, key in ENVIRONMENT.items():
        if env.get(variable):
            values[key] = env[variable]
    host = str(values.get("authority_host", ""))
    if host.startswith("https://"):  # azure-identity takes the host with or without its scheme
        values["authority_host"] = host[len("https://") :].rstrip("/")
    return AzureConfig(**values)
