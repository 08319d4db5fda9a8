"""A bot's status at ``OUTPUT/<bot>/status.json``: one typed record, written by one function.

States: ``queued`` (submitted), ``running`` (an attempt has started; ``run_id`` names it),
``succeeded`` (its run is published), ``failed`` (``reason`` says why). ``hub`` tracks the push
to the Hugging Face Hub separately: ``off``, ``pending``, ``pushed`` (with ``commit_url``) or
``failed`` (with ``reason``), because a model can be safe on S3 while the Hub is down.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from job.cloud.runs import now
from job.cloud.storage import Storage, get_json, put_json

State = Literal["queued", "running", "succeeded", "failed", "unknown"]


class HubStatus(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    state: Literal["off", "pending", "pushed", "failed"] = "off"
    repo: str | None = None
    private: bool = False
    run_id: str | None = None  # the run that was pushed
    commit_url: str | None = None
    reason: str | None = None


class Status(BaseModel):
    # Records written by other versions may carry keys this one does not know: keep reading.
    model_config = ConfigDict(extra="ignore", frozen=True)

    bot: str
    state: State
    run_id: str | None = None
    updated_at: str | None = None
    manifest: str | None = None
    attempt: str | None = None
    perplexity: float | None = None
    memorized: int | None = None
    reason: str | None = None
    hub: HubStatus = HubStatus()

    def line(self) -> str:
        """What ``huggingtweets status`` prints for the bot."""
        parts = [
            self.bot,
            self.state,
            self.run_id or "-",
            self.updated_at or "-",
            f"hub:{self.hub.state}",
        ]
        reason = self.reason or self.hub.reason
        return "  ".join(parts) + (f"  ({reason})" if reason else "")


def read_status(storage: Storage, bot: str) -> Status | None:
    data = get_json(storage, f"{bot}/status.json")
    return Status.model_validate(data) if isinstance(data, dict) else None


def write_status(storage: Storage, bot: str, state: State, **changes: Any) -> Status:
    """The one writer: the bot's record with ``changes`` applied, in ``state``, now."""
    current = read_status(storage, bot)
    fields = {**(current.model_dump() if current else {}), **changes}
    if isinstance(fields.get("hub"), HubStatus):
        fields["hub"] = fields["hub"].model_dump()
    if state != "failed":
        fields.pop("reason", None)
    record = Status.model_validate({**fields, "bot": bot, "state": state, "updated_at": now()})
    put_json(storage, f"{bot}/status.json", record.model_dump(exclude_none=True))
    return record


def statuses(storage: Storage, bots: list[str] | None = None) -> list[Status]:
    """Status records of the given bots, or of every bot under the output prefix."""
    if bots is None:
        bots = sorted(
            {
                k.split("/")[0]
                for k in storage.list("")
                if k.endswith("/status.json") and k.count("/") == 1
            }
        )
    return [read_status(storage, bot) or Status(bot=bot, state="unknown") for bot in bots]
