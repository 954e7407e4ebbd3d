"""The `[azure]` settings: which subscription and ARM endpoint, defaults for provisioning, DMS classic."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_ARM_ENDPOINT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class AzureConfig:
    subscription_id: str = ""
    arm_endpoint: str = DEFAULT_ARM_ENDPOINT
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

    def __post_init__(self) -> None:
        envs = self.admin_password_envs
        if isinstance(envs, str) or not all(isinstance(e, str) and ENV_NAME.match(e) for e in envs):
            raise ValueError(f"azure.admin_password_envs: expected a list of environment variable names, got {envs!r}")
        object.__setattr__(self, "admin_password_envs", tuple(envs))

    @property
    def enabled(self) -> bool:
        return bool(self.subscription_id)

    @property
    def credential_scope(self) -> str:
        """Sovereign clouds take the token for their own endpoint; the public cloud's scope otherwise."""
        if self.arm_endpoint.rstrip("/") == DEFAULT_ARM_ENDPOINT or "127.0.0.1" in self.arm_endpoint:
            return ARM_SCOPE
        return self.arm_endpoint.rstrip("/") + "/.default"

    @property
    def verify(self) -> str | bool:
        return self.ca_file or os.environ.get("SSL_CERT_FILE") or True


def from_environment(values: dict, env: Mapping[str, str] | None = None) -> AzureConfig:
    """The `[azure]` table with the environment on top: AZURE_SUBSCRIPTION_ID, PGMIG_ARM_ENDPOINT."""
    env = os.environ if env is None else env
    values = dict(values)
    if env.get("AZURE_SUBSCRIPTION_ID"):
        values["subscription_id"] = env["AZURE_SUBSCRIPTION_ID"]
    if env.get("PGMIG_ARM_ENDPOINT"):
        values["arm_endpoint"] = env["PGMIG_ARM_ENDPOINT"]
    return AzureConfig(**values)
