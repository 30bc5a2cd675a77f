"""Controller tests: the strict Kubernetes emulator fixture (tests/kubeemu.py)."""

from tests.kubeemu import kube_emulator

__all__ = ["kube_emulator"]
