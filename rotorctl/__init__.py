"""Rotor on one machine: ``rotor demo`` and the system-test harness.

Sits above ``agent``, ``webhook`` and ``controller`` (it runs them as processes, and delegates
``rotor acl`` to ``controller.cli``)."""
