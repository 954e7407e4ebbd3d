"""Who may do what: operators start and cancel, approvers approve. IDs are Slack users or user groups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Directory(Protocol):
    """Resolves a user group (an `S…` id) to its members; Slack's usergroups.users.list or a static map."""

    async def members(self, group_id: str) -> set[str]: ...


class StaticDirectory:
    """Groups known ahead of time (the shell adapter, and Slack workspaces without user groups)."""

    def __init__(self, groups: dict[str, set[str]] | None = None) -> None:
        self.groups = groups or {}

    async def members(self, group_id: str) -> set[str]:
        return set(self.groups.get(group_id, set()))


@dataclass(frozen=True)
class Policy:
    notify_channel: str = ""
    approvers: tuple[str, ...] = ()
    required_approvals: int = 1
    operators: tuple[str, ...] = ()
    approval_timeout_minutes: int = 60


def is_group(principal: str) -> bool:
    return principal.startswith("S")


async def _member(user: str, principals: tuple[str, ...], directory: Directory) -> bool:
    if user in principals:
        return True
    for principal in principals:
        if is_group(principal) and user in await directory.members(principal):
            return True
    return False


async def may_operate(user: str, policy: Policy, directory: Directory) -> bool:
    """Operators may start, cancel and cut over; an empty list means anyone may."""
    return not policy.operators or await _member(user, policy.operators, directory)


async def may_change_cloud(user: str, policy: Policy, directory: Directory) -> bool:
    """Creating or changing cloud resources needs an explicit operators list: an empty one means nobody."""
    return bool(policy.operators) and await _member(user, policy.operators, directory)


async def may_approve(user: str, policy: Policy, directory: Directory) -> bool:
    return await _member(user, policy.approvers, directory)
