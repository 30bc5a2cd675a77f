"""Rotor's shared contract: the names, types and rules that agent, webhook and controller share.

Nothing in this package does I/O beyond reading the environment it is handed, except
:mod:`rotor.vaultkv` (the hvac client core, imported only by the processes that talk to Vault); it
imports none of ``agent``, ``webhook`` or ``controller`` (an import-linter contract checks that).
"""

API_GROUP = "rotor.dev"
API_VERSION = "v1alpha1"
API = f"{API_GROUP}/{API_VERSION}"
PREFIX = f"{API_GROUP}/"

__version__ = "0.1.0"
