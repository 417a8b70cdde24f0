"""Which Courier targets an event goes to, from the config's links. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from segroute.events import Event

if TYPE_CHECKING:
    from segroute.config import Config


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request goes: an automation (with the link's brand), or the user's profile."""

    kind: Literal["automation", "profile"]
    automation: str | None = None
    brand: str | None = None
    label: str = field(init=False, compare=False, repr=False)
    """How summaries and reports name the target."""

    def __post_init__(self) -> None:
        label = f"automation {self.automation}" if self.kind == "automation" else "profile merge"
        object.__setattr__(self, "label", label)


PROFILE = Target("profile")

SKIP_REASONS = {
    "not_routed": "a type Courier's Segment integration does not route (page, screen, group, alias)",
    "anonymous": "no userId: Courier addresses users by id",
    "unlinked": "a track event that no link names",
    "profiles_off": "an identify, with update_profiles = false in the config",
    "no_traits": "an identify with no traits to merge",
    "duplicate": "a messageId already seen in this run",
    "filtered": "left out by --type, --event, --user, --since, --until or --sample",
    "limit": "past --limit, with --order timestamp (every event was read to sort them)",
    "already_sent": "every request of the event was accepted by Courier in an earlier run (the ledger)",
    "other_shard": "another shard's share (--shard K/N), partitioned by user",
    "uncertain": "an earlier run sent a request of it and was stopped before Courier's answer was "
    "recorded, and the request's Idempotency-Key may have expired: sent only with --resend-uncertain",
    "target_failing": "its target refused every request alike, so segroute stopped sending to it",
}


class Router:
    """Routes events by the config: track -> every linked automation, identify -> profile merge."""

    def __init__(self, config: Config) -> None:
        self._targets = {
            event: tuple(Target("automation", link.automation, link.brand) for link in links)
            for event, links in config.links_by_event().items()
        }
        self._update_profiles = config.update_profiles

    def route(self, event: Event) -> tuple[Target, ...] | str:
        """The event's targets, or the reason (a key of SKIP_REASONS) it goes nowhere."""
        if event.type == "track":
            # Unlinked first: an event nothing is linked to is the thing to fix, whoever sent it.
            targets = self._targets.get(event.name or "")
            if not targets:
                return "unlinked"
            return "anonymous" if event.user_id is None else targets
        if event.type == "identify":
            if event.user_id is None:
                return "anonymous"
            if not self._update_profiles:
                return "profiles_off"
            return (PROFILE,) if event.data.get("traits") else "no_traits"
        return "not_routed"
