"""Azure's failures as one readable line with what to do: ARM error codes, auth, unreachable endpoints."""

from __future__ import annotations

import re

from migration_core.state.errors import MigrationError

FIXES = {
    "ServerNameAlreadyExists": "server names are global across Azure: choose another name",
    "NameAlreadyExists": "choose another name",
    "QuotaExceeded": "request a vCore quota increase for this region (Azure portal → Quotas) or pick a smaller SKU",
    "SubscriptionQuotaExceeded": "request a quota increase for this region or pick a smaller SKU",
    "OperationNotAllowed": "check the subscription's quota and the region's offer for this SKU",
    "AuthorizationFailed": "give pgmig's identity the role the README's Azure permissions table lists for this "
    "command (`/pgmig azure-check` shows what it may do now)",
    "LinkedAuthorizationFailed": "pgmig's identity also needs rights on the linked resource (the subnet or private "
    "DNS zone): Network Contributor on it, or the actions the README lists",
    "ResourceGroupNotFound": "create the resource group first (az group create) or name an existing one",
    "ResourceNotFound": "check the name and resource group",
    "InvalidParameterValue": "check the value against `/pgmig help provision`",
    "LocationNotAvailableForResourceType": "choose a region where flexible server is offered",
    "SkuNotAvailable": "choose a SKU offered in this region (az postgres flexible-server list-skus)",
    "ServerIsStopped": "start the server (az postgres flexible-server start) and try again",
    "SubnetNotDelegated": "delegate the subnet to Microsoft.DBforPostgreSQL/flexibleServers "
    "(az network vnet subnet update --delegations Microsoft.DBforPostgreSQL/flexibleServers)",
}


def registration_fix(namespace: str) -> str:
    """How a subscription is registered for a resource provider, and by whom."""
    return (
        f"register the resource provider once: `az provider register --namespace {namespace}` (someone with "
        f"`{namespace}/register/action` on the subscription, e.g. its Contributor or Owner; pgmig's "
        "resource-group role cannot), then try again"
    )


def _fix(code: str, message: str) -> str:
    if code == "MissingSubscriptionRegistration":
        named = re.search(r"namespace '([^']+)'", message) or re.search(r"'([^']+)'", message)
        return registration_fix(named.group(1) if named else "<namespace>")
    if code == "AuthorizationFailed" and (
        found := re.search(r"perform action '([^']+)' over scope '([^']+)'", message)
    ):
        return (
            f"grant pgmig's identity `{found.group(1)}` on `{found.group(2)}` (a role the README's Azure "
            "permissions table lists for this command); `/pgmig azure-check` shows what it may do now"
        )
    return FIXES.get(code, "")


def explain(exc: BaseException, doing: str) -> MigrationError:
    """The error a user sees when `doing` (e.g. "creating server x") failed at Azure."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

    if isinstance(exc, ClientAuthenticationError):
        return MigrationError(
            f"{doing}: Azure refused pgmig's credentials ({_first_line(exc)})",
            "set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or run with a managed or workload identity; "
            "in a sovereign cloud also [azure] authority_host (AZURE_AUTHORITY_HOST)",
        )
    if isinstance(exc, HttpResponseError):
        code = getattr(getattr(exc, "error", None), "code", None) or ""
        message = getattr(getattr(exc, "error", None), "message", None) or _first_line(exc)
        return MigrationError(f"{doing}: Azure said {code or exc.status_code}: {message}", _fix(code, message))
    if isinstance(exc, ServiceRequestError):
        return MigrationError(
            f"{doing}: the Azure endpoint could not be reached ({_first_line(exc)})",
            "check [azure] arm_endpoint / PGMIG_ARM_ENDPOINT, the network and the CA (SSL_CERT_FILE)",
        )
    return MigrationError(f"{doing}: {type(exc).__name__}: {_first_line(exc)}")


def code_of(exc: BaseException) -> str:
    """ARM's error code of an SDK exception ("" when it has none)."""
    return str(getattr(getattr(exc, "error", None), "code", None) or "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
