"""The Internet Computer canister ACL backend (canister/, interface canister/acl.did).

The controller's identity (a PEM key from a Kubernetes Secret) signs requests to the canister
over the IC HTTP interface (v2: ``query``, ``call`` then ``read_state`` for the reply). ic-py
gives the identity, request signing, request ids and Candid encoding; answers are decoded by the
bounded decoder of :mod:`.wire` (ic-py's cannot be bounded); the HTTP transport is written here
with aiohttp because ic-py 1.0.1's async update path polls with a blocking sleep (``waiter``), has
no timeouts and returns a rejection as a plain string.

What a snapshot is checked against (``canister_verify``, see docs/canister.md):

* ``none``: only the Candid answer (types, fields, names) is checked.
* ``hash-tree``: the answer carries the IC certificate from ``CertifiedData.getCertificate()``;
  its hash tree is reduced to a root hash, ``/canister/<id>/certified_data`` must equal sha256 of
  the ACL's canonical encoding (:func:`encode_acl`, the same bytes canister/src/State.mo hashes)
  and ``/time`` must be within ``canister_cert_max_age`` of now.
* ``strict`` (default): also the BLS12-381 signature over the root hash, with the IC root key
  (or the subnet key of a delegation, itself certified by the root key, whose canister ranges
  must hold the canister id). Update replies (``read_state`` certificates) are checked the same
  way, less the certified-data comparison.

A bad answer (wrong Candid type, missing field, malformed name, certificate mismatch or too old)
raises :class:`CanisterAnswerError`, a retryable :class:`~rotor.errors.UnavailableError`: the
controller keeps the last good ACL and reports staleness, as for any unreachable backend.

Modules: :mod:`.candid` (types of acl.did, canonical encoding, snapshot conversion),
:mod:`.wire` (the bounded Candid decoder), :mod:`.certificate` (pure verification, no I/O),
:mod:`.transport` (the IC HTTP interface and the identity), :mod:`.backend`
(:class:`CanisterAclBackend`), :mod:`.mark` (the highest ACL version, kept across restarts).
"""

from controller.acl.canister.backend import CanisterAclBackend
from controller.acl.canister.candid import (
    ACL,
    CERTIFIED_ACL,
    RESULT,
    acl_hash,
    candid_args,
    decode_one,
    encode_acl,
    to_snapshot,
)
from controller.acl.canister.certificate import (
    Certificate,
    Verify,
    leb128,
    lookup,
    parse_certificate,
    tree_digest,
    verify_certificate,
)
from controller.acl.canister.errors import CanisterAnswerError
from controller.acl.canister.transport import IDENTITY_KEY, IcClient, load_identity

__all__ = [
    "ACL",
    "CERTIFIED_ACL",
    "IDENTITY_KEY",
    "RESULT",
    "CanisterAclBackend",
    "CanisterAnswerError",
    "Certificate",
    "IcClient",
    "Verify",
    "acl_hash",
    "candid_args",
    "decode_one",
    "encode_acl",
    "leb128",
    "load_identity",
    "lookup",
    "parse_certificate",
    "to_snapshot",
    "tree_digest",
    "verify_certificate",
]
