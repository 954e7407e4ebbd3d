"""Azure's failures as one readable line with what to do: ARM error codes, auth, unreachable endpoints."""

from __future__ import annotations

from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from migration_core.errors import MigrationError

FIXES = {
    "ServerNameAlreadyExists": "server names are global across Azure: choose another name",
    "NameAlreadyExists": "choose another name",
    "QuotaExceeded": "request a vCore quota increase for this region (Azure portal → Quotas) or pick a smaller SKU",
    "SubscriptionQuotaExceeded": "request a quota increase for this region or pick a smaller SKU",
    "OperationNotAllowed": "check the subscription's quota and the region's offer for this SKU",
    "AuthorizationFailed": "give pgmig's identity the Contributor role on the resource group",
    "ResourceGroupNotFound": "create the resource group first (az group create) or name an existing one",
    "ResourceNotFound": "check the name and resource group",
    "InvalidParameterValue": "check the value against `/pgmig help provision`",
    "LocationNotAvailableForResourceType": "choose a region where flexible server is offered",
    "SkuNotAvailable": "choose a SKU offered in this region (az postgres flexible-server list-skus)",
}


def explain(exc: BaseException, doing: str) -> MigrationError:
    """The error a user sees when `doing` (e.g. "creating server x") failed at Azure."""
    if isinstance(exc, ClientAuthenticationError):
        return MigrationError(
            f"{doing}: Azure refused pgmig's credentials ({_first_line(exc)})",
            "set AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or run with a managed or workload identity",
        )
    if isinstance(exc, HttpResponseError):
        code = getattr(getattr(exc, "error", None), "code", None) or ""
        message = getattr(getattr(exc, "error", None), "message", None) or _first_line(exc)
        fix = FIXES.get(code, "")
        return MigrationError(f"{doing}: Azure said {code or exc.status_code}: {message}", fix)
    if isinstance(exc, ServiceRequestError):
        return MigrationError(
            f"{doing}: the Azure endpoint could not be reached ({_first_line(exc)})",
            "check [azure] arm_endpoint / PGMIG_ARM_ENDPOINT, the network and the CA (SSL_CERT_FILE)",
        )
    return MigrationError(f"{doing}: {type(exc).__name__}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
