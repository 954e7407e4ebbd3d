"""What a region really offers a new flexible server — PostgreSQL versions, SKUs per tier with their zones
and HA modes, storage sizes — from Azure's CapabilitiesByLocation, instead of tables frozen in pgmig: regions
differ and change. When the capabilities cannot be read, validation.py's rules stand alone (said so)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from migration_core.azure.backend import word
from migration_core.azure.clients import AzureClients
from migration_core.azure.errors import explain
from migration_core.azure.validation import VERSIONS, ProvisionRequest
from migration_core.state.errors import MigrationError

if TYPE_CHECKING:
    from azure.mgmt.postgresqlflexibleservers import models

OFFERED = ("Available", "Default", "Visible")  # CapabilityStatus values that may be chosen
LISTED = 8  # how many offered values a refusal spells out


@dataclass(frozen=True)
class SkuOffer:
    name: str
    tier: str
    zones: tuple[str, ...] = ()
    ha_modes: tuple[str, ...] = ()


@dataclass
class RegionOffer:
    """A region's offer for flexible servers, as CapabilitiesByLocation lists it."""

    region: str
    versions: list[str] = field(default_factory=list)
    skus: dict[str, SkuOffer] = field(default_factory=dict)
    storage_gb: dict[str, list[int]] = field(default_factory=dict)  # tier → sizes
    restricted: bool = False


def _offered(item: object) -> bool:
    status = word(getattr(item, "status", None))
    return not status or status in OFFERED


def offer_from(region: str, capabilities: list[models.Capability]) -> RegionOffer:
    offer = RegionOffer(region)
    for cap in capabilities:
        offer.restricted = offer.restricted or word(cap.restricted) == "Enabled"
        offer.versions += [str(v.name) for v in cap.supported_server_versions or [] if v.name and _offered(v)]
        for edition in cap.supported_server_editions or []:
            if not edition.name or not _offered(edition):
                continue
            tier = str(edition.name)
            for sku in edition.supported_server_skus or []:
                if sku.name and _offered(sku):
                    offer.skus[str(sku.name)] = SkuOffer(
                        str(sku.name),
                        tier,
                        tuple(str(z) for z in sku.supported_zones or []),
                        tuple(word(h) for h in sku.supported_ha_mode or []),
                    )
            sizes = offer.storage_gb.setdefault(tier, [])
            for storage in edition.supported_storage_editions or []:
                sizes += [
                    int(mb.storage_size_mb) // 1024
                    for mb in storage.supported_storage_mb or []
                    if mb.storage_size_mb and _offered(mb)
                ]
    offer.versions = sorted(set(offer.versions), key=lambda v: (len(v), v))
    return offer


async def region_offer(clients: AzureClients, region: str) -> RegionOffer:
    """The region's offer, read from Azure (a failure is explained: the caller decides to fall back)."""
    from azure.core.exceptions import AzureError

    try:
        async with clients.flex() as client:
            found = [cap async for cap in client.capabilities_by_location.list(region)]
    except AzureError as exc:
        raise explain(exc, f"reading what {region} offers") from None
    return offer_from(region, found)


def _some(values: list[str]) -> str:
    return ", ".join(values[:LISTED]) + (f" … ({len(values)} in all)" if len(values) > LISTED else "")


def offer_problems(req: ProvisionRequest, offer: RegionOffer) -> list[str]:
    """Every way the request asks for what the region does not offer, each with what it does offer."""
    where = req.region
    if offer.restricted:
        return [f"{where} does not offer flexible servers to this subscription: choose another --region"]
    if not offer.skus and not offer.versions:
        return [f"{where} lists no flexible-server offer: choose another --region"]
    problems = []
    if offer.versions and req.version not in offer.versions:
        problems.append(f"{where} offers PostgreSQL {_some(offer.versions)}, not {req.version}")
    sku = offer.skus.get(req.sku)
    if sku is None or sku.tier != req.tier:
        in_tier = sorted(s.name for s in offer.skus.values() if s.tier == req.tier)
        problems.append(
            f"{where} offers no {req.tier} SKU {req.sku}"
            + (f": {req.tier} SKUs there are {_some(in_tier)}" if in_tier else f": it has no {req.tier} tier")
        )
    else:
        for flag, zone in (("--zone", req.zone), ("--standby-zone", req.standby_zone)):
            if zone and zone not in sku.zones:
                zones = ", ".join(sku.zones) or "none (the region has no availability zones)"
                problems.append(f"{flag} {zone}: {req.sku} in {where} is offered in zones {zones}")
        if req.ha != "Disabled" and req.ha not in sku.ha_modes:
            modes = ", ".join(sku.ha_modes) or "none"
            problems.append(f"HA {req.ha} is not offered for {req.sku} in {where} (offered: {modes})")
    sizes = sorted(set(offer.storage_gb.get(req.tier, [])))
    if sizes and req.storage_gb not in sizes:
        problems.append(f"{where} offers {req.tier} storage of {', '.join(map(str, sizes))} GB, not {req.storage_gb}")
    return problems


async def checked(clients: AzureClients, req: ProvisionRequest) -> ProvisionRequest:
    """The request, refused when the region does not offer it; when the offer cannot be read, let through on
    validation.py's fixed rules with a warning that says so (and why)."""
    try:
        offer = await region_offer(clients, req.region)
    except MigrationError as exc:
        if req.version not in VERSIONS:
            raise MigrationError(
                f"cannot provision: PostgreSQL {req.version} is not among the versions pgmig knows "
                f"({', '.join(VERSIONS)}) and {exc.message}",
                exc.fix,
            ) from None
        note = f"what {req.region} offers could not be read ({exc.message}); checked against pgmig's fixed rules only"
        return replace(req, warnings=[*req.warnings, note])
    if problems := offer_problems(req, offer):
        raise MigrationError("cannot provision: " + "; ".join(problems))
    return req
