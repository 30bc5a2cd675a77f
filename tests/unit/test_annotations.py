"""rotor.annotations: what a pod asks for, and the errors a user sees for malformed annotations."""

from __future__ import annotations

import pytest

from rotor import annotations as a
from rotor.errors import AnnotationError
from rotor.names import SecretRef


def ref(text: str) -> SecretRef:
    ns, _, name = text.partition("/")
    return SecretRef(ns, name)


@pytest.mark.parametrize(
    ("ann", "rw", "ro"),
    [
        ({a.RW: "db"}, ["shop/db"], []),
        ({a.RO: "db"}, [], ["shop/db"]),
        ({a.RO: "other/db, shop/api-key"}, [], ["other/db", "shop/api-key"]),
        ({a.RW: "db,cache", a.RO: "other/x"}, ["shop/db", "shop/cache"], ["other/x"]),
        ({a.RW: "db, db ,"}, ["shop/db"], []),
    ],
)
def test_requests_are_read_with_the_pod_namespace(ann, rw, ro):
    req = a.parse_pod(ann, "shop")
    assert req is not None
    assert list(req.rw) == [ref(r) for r in rw]
    assert list(req.ro) == [ref(r) for r in ro]
    assert req.mode == ("rw" if rw else "ro")


def test_defaults():
    req = a.parse_pod({a.RO: "db"}, "shop")
    assert req is not None
    assert req.mount_path == "/var/run/secrets/rotor"
    assert req.delivery == "agent"
    assert str(req.reload) == "none"
    assert req.wait is True
    assert req.apply_hook == ""


@pytest.mark.parametrize(
    "ann",
    [{}, {"app": "x"}, {a.RW: "db", a.INJECT: "false"}, {a.MOUNT_PATH: "/x"}],
)
def test_nothing_asked_or_opted_out(ann):
    assert a.parse_pod(ann, "shop") is None


@pytest.mark.parametrize(
    ("ann", "annotation", "words"),
    [
        ({a.RW: ""}, a.RW, "lists no secret"),
        ({a.RW: "Bad_Name"}, a.RW, "not a valid name"),
        ({a.RW: "other/db"}, a.RW, "another namespace"),
        ({a.RO: "a/b/c"}, a.RO, "more than one '/'"),
        ({a.RW: "db", a.RO: "db"}, a.RO, "also in"),
        ({a.RW: "db", a.RO: "other/db"}, a.RO, "have the same name"),
        ({a.RO: "one/db,two/db"}, a.RO, "have the same name"),
        ({a.RO: "db", a.MOUNT_PATH: "relative/path"}, a.MOUNT_PATH, "not an absolute path"),
        ({a.RO: "db", a.MOUNT_PATH: "/a/../b"}, a.MOUNT_PATH, "contains '..'"),
        ({a.RO: "db", a.MOUNT_PATH: "/"}, a.MOUNT_PATH, "would hide the system folder"),
        ({a.RO: "db", a.MOUNT_PATH: "/etc"}, a.MOUNT_PATH, "would hide the system folder"),
        ({a.RO: "db", a.MOUNT_PATH: "/opt"}, a.MOUNT_PATH, "is a system folder"),
        ({a.RO: "db", a.DELIVERY: "carrier-pigeon"}, a.DELIVERY, "not a delivery"),
        ({a.RW: "db", a.DELIVERY: "env"}, a.DELIVERY, "read-only secrets only"),
        ({a.RO: "db", a.RELOAD: "signal:KILL"}, a.RELOAD, "unsupported signal"),
        ({a.RO: "db", a.RELOAD: "http://example.com:80/r"}, a.RELOAD, "not a loopback"),
        ({a.RO: "db", a.RELOAD: "http://127.0.0.1/r"}, a.RELOAD, "must name a port"),
        ({a.RO: "db", a.RELOAD: "restart"}, a.RELOAD, "not a reload method"),
        ({a.RO: "db", a.APPLY_HOOK: "http://127.0.0.1:8080/a"}, a.APPLY_HOOK, "writers only"),
        ({a.RW: "db", a.APPLY_HOOK: "https://127.0.0.1:8080/a"}, a.APPLY_HOOK, "loopback"),
        ({a.RW: "db", a.WAIT: "maybe"}, a.WAIT, "not a boolean"),
        ({a.RW: "db", a.INJECT: "nope"}, a.INJECT, "not a boolean"),
    ],
)
def test_malformed_annotations_name_the_annotation_and_the_fix(ann, annotation, words):
    with pytest.raises(AnnotationError) as exc:
        a.parse_pod(ann, "shop")
    assert exc.value.field == annotation
    assert words in exc.value.problem
    assert exc.value.fix, "every error says how to fix it"
    assert str(exc.value).startswith(f"{annotation}: ")


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("none", "none", ""),
        ("signal:HUP", "signal", "HUP"),
        ("signal:SIGUSR1", "signal", "USR1"),
        ("http://127.0.0.1:9000/-/reload", "http", "http://127.0.0.1:9000/-/reload"),
        ("http://localhost:8080/reload", "http", "http://localhost:8080/reload"),
    ],
)
def test_reload_methods(text, kind, detail):
    r = a.parse_reload(text)
    assert r.kind == kind
    assert (r.signal or r.url) == detail
    assert a.parse_reload(str(r)) == r


def test_signal_number():
    import signal

    assert a.parse_reload("signal:HUP").signum == signal.SIGHUP


def test_secrets_lists_each_once_writes_first():
    req = a.parse_pod({a.RW: "db", a.RO: "other/x,shop/y"}, "shop")
    assert req is not None
    assert [str(s) for s in req.secrets] == ["shop/db", "other/x", "shop/y"]


def test_injected_marker():
    assert a.is_injected({a.STATUS: "injected"})
    assert not a.is_injected({})
    assert not a.is_injected(None)


# -- hostile input: bounds, mount paths, URLs -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("a," * (128 * 1024), "characters long"),  # 256 KiB of one name repeated
        (",".join(f"s{i}" for i in range(a.MAX_SECRETS + 1)), f"more than {a.MAX_SECRETS}"),
    ],
)
@pytest.mark.parametrize("annotation", [a.RW, a.RO])
def test_long_secret_lists_are_refused_naming_the_bound(value, words, annotation):
    with pytest.raises(AnnotationError) as exc:
        a.parse_pod({annotation: value}, "shop")
    assert exc.value.field == annotation
    assert words in exc.value.problem
    assert f"at most {a.MAX_SECRETS} secrets" in exc.value.fix


def test_the_bound_counts_rw_and_ro_together_and_allows_the_maximum():
    half = a.MAX_SECRETS // 2
    req = a.parse_pod(
        {
            a.RW: ",".join(f"w{i}" for i in range(half)),
            a.RO: ",".join(f"r{i}" for i in range(half)),
        },
        "shop",
    )
    assert req is not None
    assert len(req.secrets) == a.MAX_SECRETS
    with pytest.raises(AnnotationError, match=f"more than {a.MAX_SECRETS}"):
        a.parse_pod(
            {
                a.RW: ",".join(f"w{i}" for i in range(half + 1)),
                a.RO: ",".join(f"r{i}" for i in range(half)),
            },
            "shop",
        )


@pytest.mark.parametrize("annotation", [a.MOUNT_PATH, a.RELOAD, a.DELIVERY, a.WAIT])
def test_every_long_annotation_is_refused(annotation):
    with pytest.raises(AnnotationError) as exc:
        a.parse_pod({a.RO: "db", annotation: "/" + "x" * (300 * 1024)}, "shop")
    assert exc.value.field == annotation
    assert "characters long" in exc.value.problem


@pytest.mark.parametrize(
    "path",
    [
        "/./etc",
        "/./proc",
        "/./var/run/secrets/kubernetes.io/serviceaccount",
        "//var/run/secrets/kubernetes.io",
        "/var/run/secrets/kubernetes.io/serviceaccount/",
        "/run/secrets/kubernetes.io/serviceaccount",
        "/var/run/secrets",
        "/var/run",
        "/var",
        "/usr",
        "/usr/local/bin",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/boot",
        "/dev/shm",
        "/sys/fs",
        "/etc/ssl/certs",
        "/etc/passwd",
        "/etc/resolv.conf",
        "/tmp",
        "/home",
        "/.",
        "/x/./../etc",
    ],
)
def test_system_folders_the_token_folder_and_their_parents_are_refused(path):
    with pytest.raises(AnnotationError) as exc:
        a.parse_pod({a.RO: "db", a.MOUNT_PATH: path}, "shop")
    assert exc.value.field == a.MOUNT_PATH
    assert "/var/run/secrets/rotor" in exc.value.fix


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("/etc/rotor", "/etc/rotor"),
        ("/etc/nginx/secrets", "/etc/nginx/secrets"),
        ("/var/run/secrets/rotor/", "/var/run/secrets/rotor"),
        ("/srv/./app//files", "/srv/app/files"),
        ("/data", "/data"),
        ("/var/lib/app", "/var/lib/app"),
    ],
)
def test_ordinary_folders_of_the_app_are_allowed_and_normalised(path, normal):
    req = a.parse_pod({a.RO: "db", a.MOUNT_PATH: path}, "shop")
    assert req is not None
    assert req.mount_path == normal


@pytest.mark.parametrize("bad", ["\r\n", "\n", "\t", " ", "\x00", "\x7f"])
@pytest.mark.parametrize(("annotation", "base"), [(a.RELOAD, a.RO), (a.APPLY_HOOK, a.RW)])
def test_urls_with_control_characters_are_refused(bad, annotation, base):
    url = f"http://127.0.0.1:8080/re{bad}load"
    with pytest.raises(AnnotationError) as exc:
        a.parse_pod({base: "db", annotation: url}, "shop")
    assert exc.value.field == annotation
    assert "control character" in exc.value.problem
