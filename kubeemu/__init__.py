"""The strict Kubernetes API emulator: a testing package, not part of the product.

``rotor demo``, ``rotor kube``, the system-test harness, the fast test tiers and the benchmarks
run Rotor against it (kmock's KubernetesEmulator made stricter: authentication, RBAC,
admission, garbage collection, selectors). It is installed with the ``demo`` extra (kmock) and
no product package (rotor, agent, webhook, controller, audit) may import it (import-linter,
pyproject.toml). What it enforces and how it differs from a real kube-apiserver: docs/demo.md.

* :mod:`kubeemu.emulator`: the server (:class:`~kubeemu.emulator.StrictEmulator`) and its
  thread (:class:`~kubeemu.emulator.EmulatorThread`);
* :mod:`kubeemu.rbac`: RBAC as the real authorizer evaluates it;
* :mod:`kubeemu.admission`: mutating admission webhooks;
* :mod:`kubeemu.selectors`: label and field selectors.

This module imports nothing, so ``import kubeemu.rbac`` does not load kmock.
"""
