"""Who may do what: operators start and cancel, approvers approve. IDs are Slack users or user groups."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
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


class Role(StrEnum):
    """Who may run a command (its `CommandSpec.who`); the router checks it before the handler runs."""

    ANYONE = "anyone"
    OPERATOR = "operator"  # `may_operate`: an empty operators list means anyone
    CLOUD_OPERATOR = "cloud operator"  # `may_change_cloud`: an empty operators list means nobody


def operators_only(action: str) -> str:
    """The refusal of an operator's `action` ("start migrations") to anyone else."""
    return f"only operators may {action}: ask one of the people or groups in [slack] operators"


async def refusal(who: Role, action: str, user: str, policy: Policy, directory: Directory) -> str | None:
    """Why `user` may not do `action` (a command that needs `who`), or None when they may."""
    if who is Role.OPERATOR and not await may_operate(user, policy, directory):
        return operators_only(action)
    if who is Role.CLOUD_OPERATOR and not await may_change_cloud(user, policy, directory):
        if not policy.operators:
            return (
                f'nobody may {action} until operators are named: set [slack] operators = ["U…"] (Slack user or '
                "user-group ids) in pgmig's config and restart pgmig"
            )
        return f"only operators may {action} ([slack] operators)"
    return None
