"""The audit receiver (``rotor-audit-receiver``): Vault as a source, as vault-secret-sync does it.

A small process of its own (it holds no Vault token and no Kubernetes rights) that receives
Vault/OpenBao audit entries, keeps the successful writes to the KV v2 paths that ExternalStores
reference (minus Rotor's own), and queues them, coalesced by path, for the controller, which
pulls them and propagates each changed value (:mod:`controller.propagate`).

Inputs (each entry is one JSON object; request data is HMAC'd by Vault, and only the path,
the operation, the new version number and the author's display name are kept):

* **socket** (default, port 9760): Vault's ``socket`` audit device with ``socket_type=tcp``
  sends newline-delimited JSON. The device speaks neither TLS nor any authentication, so the
  receiver accepts connections only from ``ROTOR_AUDIT_ALLOWED_SOURCES`` (addresses or networks,
  default loopback; set Vault's pod network) and a NetworkPolicy should allow only Vault's pods.
* **file tail** (off by default, ``ROTOR_AUDIT_TAIL_FILE``): the receiver runs as a sidecar of
  Vault and follows a ``file`` audit device's log on a shared volume. Unlike the socket device,
  a file device never fails, so Vault does not depend on the receiver to unseal.
* **HTTP ingest** (off by default): ``POST /v1/audit`` from a forwarder (e.g. fluent-bit tailing
  a ``file`` device) with ``Authorization: Bearer <token>``; the body is NDJSON, a JSON array,
  or one object (a record whose ``log`` field holds the entry as a string is unwrapped).

Output, on its own port (9762), for the controller only: ``GET /events?since=N&wait=S&epoch=E``
long-polls for events with a sequence number above ``N``; the answer carries ``epoch`` (random
per start: a different one means the receiver restarted and events may be lost, so the
controller re-checks every referenced path), ``last`` and ``dropped``. Optional bearer token.
``/healthz`` and ``/metrics`` are served there too.

Which paths, and which writers are Rotor: a JSON file (a ConfigMap the controller writes),
re-read when it changes::

    {"paths": ["secret/shop/db"],
     "rotor": {"roles": ["rotor-agent"], "displayNames": ["token-rotor"], "entityIds": []}}

An entry is Rotor's own when its token's Kubernetes auth role (``auth.metadata.role``), display
name or entity id is listed: these are set by Vault at login and cannot be chosen by the
writer. This is a filter against noise only; the controller's decision compares checksums and
Rotor's metadata, so a missed one is still never echoed back.

Modules: :mod:`audit.entries` (audit lines and ingest bodies into entries), :mod:`audit.filter`
(which entries are events; pure), :mod:`audit.queue` (events coalesced by path),
:mod:`audit.receiver` (configuration, metrics, accepting entries), :mod:`audit.inputs` (the
socket device and the file tail), :mod:`audit.app` (the long-poll and ingest apps) and
:mod:`audit.main` (the process). The config file and the events' wire format are
:mod:`rotor.auditwire`, shared with the controller, which talks to the receiver over HTTP only.
"""
