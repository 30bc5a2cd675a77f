"""The controller: CRDs, ACL sync, grants to RBAC, writer choice, fan-out.

Imports ``rotor`` only.
"""
