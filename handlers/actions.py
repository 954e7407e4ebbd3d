"""Block Kit action ids: the contract between the buttons we render and the handlers that receive them."""

from enum import Enum


class Action(str, Enum):
    RERUN_CHECK = "pgmig.check.rerun"
    APPROVE_CUTOVER = "pgmig.cutover.approve"
    REJECT_CUTOVER = "pgmig.cutover.reject"
    APPROVE_PROVISION = "pgmig.provision.approve"
    REJECT_PROVISION = "pgmig.provision.reject"
    DROP_SLOT_CANCEL = "pgmig.slot.cancel"  # the slot guardian's way out: `cancel mig-N`, operators only
    # a schema change's card (handlers/ddl_messages.py): each carries the `ddl mig-N …` command it stands for
    DDL_APPLY = "pgmig.ddl.apply"
    DDL_SKIP = "pgmig.ddl.skip"  # in Slack it first opens a form asking why (the reason follows the command)
    DDL_PAUSE = "pgmig.ddl.pause"
    DDL_RESUME = "pgmig.ddl.resume"
