"""The identities and permissions of Rotor's parts, rendered from charts/rotor (never copied):
the ServiceAccounts, ClusterRoles, Roles and their bindings the chart installs, and its
MutatingWebhookConfiguration. The harness applies them to the emulator and runs the controller
and the webhook under those ServiceAccounts.

Rendering needs ``helm-python-sdk`` (in the ``demo`` and ``dev`` extras) and the chart folder of
a source checkout (an editable install)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

CHART = Path(__file__).resolve().parent.parent / "charts" / "rotor"
"""The chart beside the sources: an editable install (``pip install -e``) or the tests."""
CHART_ENV = "ROTOR_CHART"
RELEASE = "rotor"
IDENTITY_KINDS = (
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
)
# The chart refuses to render without image repositories; these are never pulled here (the
# harness runs the parts as local processes), only the RBAC and webhook objects are used.
IMAGES: dict[str, Any] = {
    "image": {"repository": "local/rotor-controller"},
    "agent": {"image": {"repository": "local/rotor-agent"}},
}
CONTROLLER_SA = f"{RELEASE}-controller"
WEBHOOK_SA = f"{RELEASE}-webhook"
WEBHOOK_CONFIG = f"{RELEASE}-webhook"


class ChartUnavailable(RuntimeError):
    """The chart or helm-python-sdk is missing (the message says how to get them)."""


def chart_dir() -> Path:
    """charts/rotor: ``$ROTOR_CHART``, else beside the sources (an editable install), else in
    the current folder (``pip install '.[cli]'``, then ``rotor demo`` in the checkout)."""
    if os.environ.get(CHART_ENV):
        chart = Path(os.environ[CHART_ENV])
        if not (chart / "Chart.yaml").is_file():
            raise ChartUnavailable(f"{CHART_ENV}={chart}: no Chart.yaml there; unset it")
        return chart
    for chart in (CHART, Path.cwd() / "charts" / "rotor"):
        if (chart / "Chart.yaml").is_file():
            return chart
    raise ChartUnavailable(
        "the chart charts/rotor (its RBAC is what the demo runs under) is in the Rotor "
        f"checkout, not in this installation: run this in the checkout, or set {CHART_ENV}="
        "CHECKOUT/charts/rotor"
    )


def render(namespace: str, values: Mapping[str, Any] | None = None) -> list[Obj]:
    """Every object the chart renders for release ``rotor`` in ``namespace``."""
    chart = chart_dir()
    try:
        import helm_python as helm
    except ImportError:
        raise ChartUnavailable(
            "helm-python-sdk is not installed: pip install '.[demo]' in a checkout of Rotor"
        ) from None
    files = helm.Chart.load(chart).render(
        _merge(IMAGES, dict(values or {})), name=RELEASE, namespace=namespace
    )
    out: list[Obj] = []
    for path, text in sorted(files.items()):
        if path.endswith(".yaml"):
            out.extend(d for d in yaml.safe_load_all(text) if d)
    return out


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Obj:
    out = dict(base)
    for k, v in over.items():
        b = out.get(k)
        out[k] = _merge(b, v) if isinstance(b, Mapping) and isinstance(v, Mapping) else v
    return out


def identities(namespace: str, values: Mapping[str, Any] | None = None) -> list[Obj]:
    """The chart's ServiceAccounts and RBAC objects, in an order a cluster accepts them."""
    docs = render(namespace, values)
    return [d for kind in IDENTITY_KINDS for d in docs if d.get("kind") == kind]


def webhook_configuration(namespace: str, values: Mapping[str, Any] | None = None) -> Obj:
    for d in render(namespace, values):
        if d.get("kind") == "MutatingWebhookConfiguration":
            return d
    raise ChartUnavailable("the chart rendered no MutatingWebhookConfiguration")
