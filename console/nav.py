"""The console's menu: one entry per page, shown to roles whose rules list the page.
A new page module appends its entry here (``NAV.append(NavItem(...))``) when imported."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NavItem:
    page: str  # what rules.toml [console.roles.*] pages must list
    path: str
    label: str  # catalogue key


NAV: list[NavItem] = [
    NavItem("triage", "/console/triage", "nav.triage"),
    NavItem("queues", "/console/queues", "nav.queues"),
    NavItem("search", "/console/search", "nav.search"),
    NavItem("grids", "/console/grids", "nav.grids"),
    NavItem("dashboard", "/console/dashboard", "nav.dashboard"),
    NavItem("scores", "/console/scores", "nav.scores"),
    NavItem("manual_calls", "/console/surveys/manual", "nav.manual_calls"),
    NavItem("users", "/console/users", "nav.users"),
    NavItem("audit", "/console/audit", "nav.audit"),
]
