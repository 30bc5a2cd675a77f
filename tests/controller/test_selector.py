"""The controller's one LabelSelector: the query the API server takes to list a workload's pods,
and the match against a pod's labels before a restart, from one reading of ``spec.selector``."""

from __future__ import annotations

from typing import Any

import pytest

from controller.selector import LabelSelector

FULL = {
    "matchLabels": {"app": "api"},
    "matchExpressions": [
        {"key": "track", "operator": "In", "values": ["stable", "canary"]},
        {"key": "env", "operator": "NotIn", "values": ["dev"]},
        {"key": "team", "operator": "Exists"},
        {"key": "legacy", "operator": "DoesNotExist"},
    ],
}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({"matchLabels": {"app": "api", "tier": "web"}}, "app=api,tier=web"),
        (FULL, "app=api,track in (canary,stable),env notin (dev),team,!legacy"),
        ({}, None),  # empty: would select every pod of the namespace
        (None, None),
        ({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}, None),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, None),
        ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, None),
        ({"matchExpressions": ["app"]}, None),
        ({"matchLabels": ["app"]}, None),
    ],
)
def test_the_query_the_api_server_takes(selector: Any, expected: str | None) -> None:
    parsed = LabelSelector.parse(selector)
    assert (parsed.query() if parsed else None) == expected


@pytest.mark.parametrize(
    ("labels", "matches"),
    [
        ({"app": "api", "track": "stable", "team": "a"}, True),
        ({"app": "api", "track": "canary", "team": "a", "env": "prod"}, True),
        ({"app": "web", "track": "stable", "team": "a"}, False),  # matchLabels
        ({"app": "api", "track": "beta", "team": "a"}, False),  # In
        ({"app": "api", "team": "a"}, False),  # In: no such label
        ({"app": "api", "track": "stable", "team": "a", "env": "dev"}, False),  # NotIn
        ({"app": "api", "track": "stable"}, False),  # Exists
        ({"app": "api", "track": "stable", "team": "a", "legacy": ""}, False),  # DoesNotExist
    ],
)
def test_a_pods_labels_matched(labels: dict[str, str], matches: bool) -> None:
    selector = LabelSelector.parse(FULL)
    assert selector is not None
    assert selector.matches(labels) is matches
