"""Every rule Azure would enforce on a new flexible server, checked before any request is sent, each
error naming the exact rule (the names and rules follow `az postgres flexible-server create`) — except
the password's: its refusal lists the rules and never says which one a secret breaks, and the one rule
that holds the secret against the request (not containing the admin user name) is left to Azure.

These are the rules that hold everywhere; what a region offers (versions, SKUs, zones, HA, storage) comes
from Azure itself afterwards (capabilities.py), and a server nothing could reach is refused here: public
access needs a firewall rule (pgmig's own address, or Azure services), private access a delegated subnet
and a private DNS zone."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date

from migration_core.state.errors import MigrationError

SERVER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
ADMIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,90}$")
REGION = re.compile(r"^[a-z0-9]+$")
RESERVED_ADMINS = ("azure_superuser", "azure_pg_admin", "admin", "administrator", "root", "guest", "public")
VERSIONS = ("11", "12", "13", "14", "15", "16", "17", "18")  # the fallback when Azure's capabilities are unreadable
MAJOR = re.compile(r"[0-9]{2}")
# The PostgreSQL community's end of life per major version (postgresql.org/support/versioning): after it Azure
# moves a server to paid extended support or a forced upgrade, so a new server on one is worth a warning.
COMMUNITY_EOL = {
    "11": "2023-11-09",
    "12": "2024-11-21",
    "13": "2025-11-13",
    "14": "2026-11-12",
    "15": "2027-11-11",
    "16": "2028-11-09",
    "17": "2029-11-08",
    "18": "2030-11-14",
}
NETWORKS = ("public", "vnet")
SUBNET_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+",
    re.IGNORECASE,
)
DNS_ZONE_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/privateDnsZones/[^/]+", re.IGNORECASE
)
STORAGE_SIZES_GB = (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
WHOLE_GB = re.compile(r"[0-9]{1,6}")
TIERS = {"burstable": "Burstable", "generalpurpose": "GeneralPurpose", "memoryoptimized": "MemoryOptimized"}
SKU_FAMILY = {  # [0-9], not \d: Python's \d takes any script's digits, which Azure's names never have
    "Burstable": re.compile(r"^Standard_B[0-9]+[a-z]*$"),
    "GeneralPurpose": re.compile(r"^Standard_D[0-9]+[a-z]*s_v[0-9]$"),
    "MemoryOptimized": re.compile(r"^Standard_E[0-9]+[a-z]*s_v[0-9]$"),
}
SKU_EXAMPLE = {
    "Burstable": "Standard_B1ms, Standard_B2s",
    "GeneralPurpose": "Standard_D2ds_v5, Standard_D4ds_v5",
    "MemoryOptimized": "Standard_E2ds_v5, Standard_E4ds_v5",
}
LEGACY_SKU = re.compile(r"^(B|GP|MO)_Gen[45]_([0-9]{1,3})$", re.IGNORECASE)  # int() of 5,000 digits fails
HA_MODES = {"zone-redundant": "ZoneRedundant", "same-zone": "SameZone", "disabled": "Disabled"}
ZONES = ("1", "2", "3")


@dataclass(frozen=True)
class FirewallRule:
    name: str
    start: str
    end: str


@dataclass
class ProvisionArgs:
    """What `/pgmig provision` was given (defaults from `[azure]` already filled in), before validation."""

    name: str
    admin_user: str
    admin_password_env: str
    resource_group: str = ""
    region: str = ""
    version: str = "16"
    tier: str = "GeneralPurpose"
    sku: str = "Standard_D2ds_v5"
    storage_gb: str | None = "128"
    ha: str | None = None
    zone: str | None = None
    standby_zone: str | None = None
    public_access: bool = False  # the older spelling of network="public"
    allow_azure_services: bool = False
    firewall: list[str] = field(default_factory=list)
    tags: str | None = None
    source: str = ""
    network: str | None = None  # public | vnet
    subnet: str | None = None  # vnet: the delegated subnet's resource id
    private_dns_zone: str | None = None  # vnet: the private DNS zone's resource id


@dataclass
class ProvisionRequest:
    """A validated `/pgmig provision`: everything the PUT body needs, the password only by its env var."""

    name: str
    resource_group: str
    region: str
    version: str
    tier: str
    sku: str
    storage_gb: int
    admin_user: str
    admin_password_env: str
    ha: str = "Disabled"
    zone: str | None = None
    standby_zone: str | None = None
    public_access: bool = False
    allow_azure_services: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    firewall: list[FirewallRule] = field(default_factory=list)
    network: str = "public"  # public (firewall rules) or vnet (delegated subnet, private DNS zone)
    subnet: str = ""
    private_dns_zone: str = ""
    warnings: list[str] = field(default_factory=list)  # said with the request and its result, never blocking

    def describe(self) -> str:
        ha = (
            f", HA {self.ha}" + (f" (standby zone {self.standby_zone})" if self.standby_zone else "")
            if self.ha != "Disabled"
            else ""
        )
        return (
            f"{self.name} in {self.resource_group}/{self.region}: PostgreSQL {self.version}, {self.tier} "
            f"{self.sku}, {self.storage_gb} GB{ha}"
            + (f", zone {self.zone}" if self.zone else "")
            + (
                f", private access in subnet {self.subnet.rsplit('/', 1)[-1]}"
                if self.network == "vnet"
                else ", public access through firewall rules"
            )
        )


def legacy_sku_advice(sku: str) -> str | None:
    """Single-server SKU names (GP_Gen5_4) are answered with the flexible-server tier and SKU to use."""
    m = LEGACY_SKU.match(sku)
    if not m:
        return None
    family, cores = m.group(1).upper(), int(m.group(2))
    tier, name = {
        "B": ("Burstable", "Standard_B1ms" if cores <= 1 else "Standard_B2s"),
        "GP": ("GeneralPurpose", f"Standard_D{cores}ds_v5"),
        "MO": ("MemoryOptimized", f"Standard_E{cores}ds_v5"),
    }[family]
    return (
        f"`{sku}` is a single-server SKU, which flexible server does not have: use "
        f"`--tier {tier} --sku {name}` ({cores} vCore{'s' if cores > 1 else ''})"
    )


def server_name_problem(name: str) -> str | None:
    if not 3 <= len(name) <= 63 or not SERVER_NAME.match(name):
        return (
            f"server name `{name}`: 3–63 characters of lowercase letters, digits and hyphens, not starting "
            "or ending with a hyphen"
        )
    return None


def admin_problem(user: str) -> str | None:
    if user.lower() in RESERVED_ADMINS:
        return f"admin user `{user}` is reserved by Azure; it may not be one of {', '.join(RESERVED_ADMINS)}"
    if user.lower().startswith("pg_"):
        return f"admin user `{user}`: names starting with `pg_` are reserved by PostgreSQL"
    if not ADMIN_NAME.match(user):
        return f"admin user `{user}`: 1–63 letters, digits or underscores, not starting with a digit"
    return None


def password_problem(password: str, env: str) -> str | None:
    """The rules, never which one failed, the length or the password itself: a refusal must not tell
    anything about a secret's content. Only what the password alone decides is checked here: held against
    an admin user the requester picks, a refusal would answer "does the secret contain this text?" for any
    text, so Azure alone enforces that rule (listed here all the same)."""
    classes = sum(
        [
            any(c.isupper() for c in password),
            any(c.islower() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ]
    )
    if not 8 <= len(password) <= 128 or classes < 3:
        return (
            f"the password in {env} does not meet Azure's password rules: 8–128 characters, characters from "
            "at least three of uppercase, lowercase, digits and symbols, and not containing the admin user name"
        )
    return None


def storage_problem(gb: int, current_gb: int | None = None) -> str | None:
    if gb not in STORAGE_SIZES_GB:
        return f"storage {gb} GB: flexible server offers {', '.join(map(str, STORAGE_SIZES_GB))} GB"
    if current_gb is not None and gb < current_gb:
        return f"storage can only grow: the server has {current_gb} GB, {gb} GB would shrink it"
    return None


def parse_tags(text: str | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in [t for t in (text or "").split(",") if t.strip()]:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise MigrationError(f"tag `{item}`: expected key=value", "--tags env=prod,team=data")
        tags[key.strip()] = value.strip()
    return tags


def parse_firewall(text: str) -> FirewallRule:
    """NAME=START-END (a single address may be given as NAME=IP)."""
    name, eq, span = text.partition("=")
    start, _, end = span.partition("-")
    end = end or start
    if not eq or not re.match(r"^[-\w]{1,128}$", name):
        raise MigrationError(
            f"firewall rule `{text}`: expected NAME=START-END", "--firewall office=203.0.113.1-203.0.113.20"
        )
    try:
        first, last = ipaddress.IPv4Address(start.strip()), ipaddress.IPv4Address(end.strip())
    except ValueError:
        raise MigrationError(
            f"firewall rule `{text}`: {start}-{end} is not an IPv4 range", "--firewall office=203.0.113.1-203.0.113.20"
        ) from None
    if first > last:
        raise MigrationError(f"firewall rule `{text}`: the start address is after the end address")
    return FirewallRule(name, str(first), str(last))


def validate(
    args: ProvisionArgs, source_major: int | None = None, allowed_envs: Collection[str] = ()
) -> ProvisionRequest:
    """Build the request from parsed `/pgmig provision` arguments, or raise with every broken rule.

    The password is only read from a variable in `allowed_envs` (`[azure] admin_password_envs`, plus the
    variable of the configured server being re-provisioned): any other is refused unread, with the same
    words whatever it holds, so a request cannot probe the environment (Slack tokens, other passwords)."""
    problems: list[str] = []
    name, rg, region = args.name, args.resource_group or "", (args.region or "").lower()
    if p := server_name_problem(name):
        problems.append(p)
    if not rg:
        problems.append("--resource-group RG is needed (or a default in [azure] resource_group)")
    elif not RESOURCE_GROUP.match(rg) or rg.endswith("."):
        problems.append(
            f"resource group `{rg}`: 1–90 letters, digits, underscores, hyphens, periods or "
            "parentheses, not ending with a period"
        )
    if not region:
        problems.append("--region REGION is needed (or a default in [azure] region)")
    elif not REGION.match(region):
        problems.append(f"region `{region}`: an Azure region name like westeurope or eastus2")
    version = str(args.version)
    if not MAJOR.fullmatch(version) or int(version) < int(VERSIONS[0]):
        problems.append(
            f"version {version}: flexible server offers PostgreSQL {VERSIONS[0]} and later "
            "(which ones, the region says)"
        )
    elif source_major is not None and int(version) < source_major:
        problems.append(
            f"version {version} is older than the source's PostgreSQL {source_major}: "
            "a migration can only go to the same or a newer major version"
        )
    sku = args.sku
    tier = TIERS.get((args.tier or "").lower().replace("-", "").replace("_", ""))
    if advice := legacy_sku_advice(sku):
        problems.append(advice)
    elif tier is None:
        problems.append(f"tier `{args.tier}`: one of Burstable, GeneralPurpose, MemoryOptimized")
    elif not SKU_FAMILY[tier].match(sku):
        problems.append(f"SKU `{sku}` is not a {tier} SKU (for example {SKU_EXAMPLE[tier]})")
    raw = str(args.storage_gb if args.storage_gb is not None else "")
    # ASCII digits only, a few of them: str.isdigit() takes `²`, which int() refuses, and int() refuses 5,000 digits
    whole = WHOLE_GB.fullmatch(raw)
    storage = int(raw) if whole else 0
    if not whole:
        shown = raw if len(raw) <= 20 else raw[:20] + "…"
        problems.append(f"--storage-gb `{shown}`: a whole number of GB, one of {', '.join(map(str, STORAGE_SIZES_GB))}")
    elif p := storage_problem(storage):
        problems.append(p)
    user = args.admin_user
    if p := admin_problem(user):
        problems.append(p)
    env = args.admin_password_env
    if not env or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", env):
        problems.append(f"--admin-password-env `{env}`: the name of an environment variable holding the password")
    elif env not in allowed_envs:
        problems.append(f"--admin-password-env {env} is not one of [azure] admin_password_envs; add it there")
    elif (password := os.environ.get(env)) is None:
        problems.append(
            f"the environment variable {env} is not set where pgmig runs (the password is read from it, "
            "never typed in chat)"
        )
    elif p := password_problem(password, env):
        problems.append(p)
    ha = HA_MODES.get((args.ha or "disabled").lower())
    zone, standby = args.zone, args.standby_zone
    for flag, z in (("--zone", zone), ("--standby-zone", standby)):
        if z is not None and z not in ZONES:
            problems.append(f"{flag} {z}: availability zones are 1, 2 or 3")
    if ha is None:
        problems.append(f"--ha {args.ha}: zone-redundant or same-zone")
    elif ha != "Disabled" and tier == "Burstable":
        problems.append("high availability is not offered on the Burstable tier: use GeneralPurpose or MemoryOptimized")
    elif ha == "ZoneRedundant" and zone and standby and zone == standby:
        problems.append("zone-redundant HA needs the standby in another zone than the primary")
    elif standby and ha != "ZoneRedundant":
        problems.append("--standby-zone only applies with --ha zone-redundant")
    tags, rules = {}, []
    try:
        tags = parse_tags(args.tags)
        rules = [parse_firewall(r) for r in args.firewall]
    except MigrationError as exc:
        problems.append(str(exc))
    network, subnet, dns = network_problems(args, rules, problems)
    if problems:
        raise MigrationError("cannot provision: " + "; ".join(problems))
    assert tier is not None and ha is not None  # every other case added a problem above
    return ProvisionRequest(
        name,
        rg,
        region,
        version,
        tier,
        sku,
        storage,
        user,
        env,
        ha,
        zone,
        standby,
        network == "public",
        bool(args.allow_azure_services),
        tags,
        rules,
        network,
        subnet,
        dns,
        version_warnings(version),
    )


def network_problems(args: ProvisionArgs, rules: list[FirewallRule], problems: list[str]) -> tuple[str, str, str]:
    """How the new server is reached — and that something can reach it: a server with public access but no
    firewall rule, or with neither public nor private access, would be created and registered as a target
    nothing can connect to. Returns (network, subnet, private DNS zone)."""
    network = (args.network or ("public" if args.public_access else "")).lower()
    subnet, dns = (args.subnet or "").strip(), (args.private_dns_zone or "").strip()
    if args.public_access and network != "public":
        problems.append("--public-access is --network public: give one of them")
    if not network:
        problems.append(
            "say how pgmig reaches the new server: `--network public --firewall pgmig=IP` (pgmig's outbound "
            "address; add --allow-azure-services when pgmig runs in Azure) or `--network vnet --subnet SUBNET_ID "
            "--private-dns-zone ZONE_ID` (pgmig running in or peered with that VNet); a server neither way "
            "reachable would be a target nothing can connect to"
        )
    elif network not in NETWORKS:
        problems.append(f"--network {network}: public or vnet")
    elif network == "public":
        if subnet or dns:
            problems.append("--subnet and --private-dns-zone are for --network vnet")
        if not rules and not args.allow_azure_services:
            problems.append(
                "a public server accepts no connection until a firewall rule allows it, pgmig's included: add "
                "--firewall pgmig=IP with pgmig's outbound address (and the sources' addresses for the flex "
                "backend), or --allow-azure-services when pgmig runs in Azure"
            )
    else:
        if rules or args.allow_azure_services:
            problems.append("firewall rules only apply with --public-access (--network public)")
        if not SUBNET_ID.fullmatch(subnet):
            problems.append(
                "--network vnet needs --subnet: the resource id of a subnet delegated to "
                "Microsoft.DBforPostgreSQL/flexibleServers (/subscriptions/…/virtualNetworks/VNET/subnets/NAME)"
            )
        if not DNS_ZONE_ID.fullmatch(dns):
            problems.append(
                "--network vnet needs --private-dns-zone: the resource id of a private DNS zone linked to that VNet "
                "(/subscriptions/…/privateDnsZones/NAME.postgres.database.azure.com)"
            )
    return network, subnet, dns


def version_warnings(version: str, today: date | None = None) -> list[str]:
    """A version past (or within a year of) its community end of life: allowed, said out loud."""
    eol = COMMUNITY_EOL.get(version)
    if eol is None:
        return []
    when, now = date.fromisoformat(eol), today or date.today()
    if when <= now:
        return [
            f"PostgreSQL {version} reached its community end of life on {eol}: Azure keeps such servers only "
            "under paid extended support or upgrades them; choose a newer --version unless you must match the source"
        ]
    if (when - now).days < 365:
        return [f"PostgreSQL {version} reaches its community end of life on {eol}: plan its upgrade"]
    return []
