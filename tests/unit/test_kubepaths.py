"""The one builder of Kubernetes API paths (rotor.kubepaths)."""

from __future__ import annotations

import pytest

from rotor.kubepaths import api_path, rotor_path, secret_path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("v1", "namespaces"), "/api/v1/namespaces"),
        (("v1", "secrets", "shop"), "/api/v1/namespaces/shop/secrets"),
        (("v1", "secrets", "shop", "db"), "/api/v1/namespaces/shop/secrets/db"),
        (
            ("v1", "serviceaccounts", "shop", "app", "token"),
            "/api/v1/namespaces/shop/serviceaccounts/app/token",
        ),
        (
            ("apps/v1", "deployments", "shop", "web"),
            "/apis/apps/v1/namespaces/shop/deployments/web",
        ),
        (
            ("rotor.dev/v1alpha1", "rotatingsecrets", "shop", "db", "status"),
            "/apis/rotor.dev/v1alpha1/namespaces/shop/rotatingsecrets/db/status",
        ),
        (
            ("admissionregistration.k8s.io/v1", "mutatingwebhookconfigurations", None, "rotor"),
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/rotor",
        ),
        # a name can never add a segment or a query
        (("v1", "secrets", "a/b", "x/../y?z"), "/api/v1/namespaces/a%2Fb/secrets/x%2F..%2Fy%3Fz"),
    ],
)
def test_api_path(args: tuple[str, ...], expected: str) -> None:
    assert api_path(*args) == expected


def test_shorthands() -> None:
    assert secret_path("shop") == "/api/v1/namespaces/shop/secrets"
    assert secret_path("shop", "db") == "/api/v1/namespaces/shop/secrets/db"
    assert rotor_path("externalstores", "shop", "vault") == (
        "/apis/rotor.dev/v1alpha1/namespaces/shop/externalstores/vault"
    )
