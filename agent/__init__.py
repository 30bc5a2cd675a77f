"""The rotation agent: a sidecar in every annotated pod, or standalone on a laptop.

Imports ``rotor`` only.
"""
