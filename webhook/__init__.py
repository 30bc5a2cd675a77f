"""The mutating admission webhook that injects the rotation agent. Imports ``rotor`` only."""
