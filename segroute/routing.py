"""Which Courier targets an event goes to, from the config's links. Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from segroute.models import Event, SkipReason, Target

if TYPE_CHECKING:
    from segroute.config import Config

__all__ = [
    "PROFILE",
    "Router",
]


PROFILE = Target("profile")


class Router:
    """Routes events by the config: track -> every linked automation, identify -> profile merge."""

    def __init__(self, config: Config) -> None:
        self._targets = {
            event: tuple(Target("automation", link.automation, link.brand) for link in links)
            for event, links in config.links_by_event().items()
        }
        self._update_profiles = config.update_profiles

    def route(self, event: Event) -> tuple[Target, ...] | SkipReason:
        """The event's targets, or the reason it goes nowhere."""
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
