/// Interpreter tests of the ACL logic (State.mo) and SHA-256 (Sha256.mo).
/// Run: node scripts/moc.mjs run test/AclTest.mo  (pytest runs it: tests/canister).
/// Each check prints "PASS <name>"; a failed assert stops the run with a non-zero exit.

import Principal "mo:core/Principal";
import Text "mo:core/Text";
import Debug "mo:core/Debug";
import Nat8 "mo:core/Nat8";
import State "../src/State";
import Sha256 "../src/Sha256";
import Types "../src/Types";

let installer = Principal.fromText("rrkah-fqaaa-aaaaa-aaaaq-cai");
let second = Principal.fromText("ryjl3-tyaaa-aaaaa-aaaba-cai");
let controller = Principal.fromText("r7inp-6aaaa-aaaaa-aaabq-cai");
let stranger = Principal.fromText("rkp4c-7iaaa-aaaaa-aaaca-cai");

func pass(name : Text) { Debug.print("PASS " # name) };

func hex(b : Blob) : Text {
  let digits = Text.toArray("0123456789abcdef");
  var out = "";
  for (byte in b.values()) {
    let n = Nat8.toNat(byte);
    out #= Text.fromChar(digits[n / 16]) # Text.fromChar(digits[n % 16]);
  };
  out;
};

func isOk(r : Types.Result) : Bool { switch r { case (#ok(_)) true; case (#err(_)) false } };

func notAuthorized(r : Types.Result) : Bool {
  switch r { case (#err(#not_authorized(_))) true; case _ false };
};

// -- SHA-256: FIPS 180-4 vectors (0, 1 and 2 blocks) ----------------------------------------------
assert hex(Sha256.hash("")) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
assert hex(Sha256.hash("abc")) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
assert hex(Sha256.hash("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
  == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
pass "sha256_vectors";

// -- the installer is the first admin; only admins approve --------------------------------------
let s = State.init(installer);
assert State.isAdmin(s, installer);
assert not State.isAdmin(s, stranger);
assert notAuthorized(State.createSecret(s, stranger, "shop/db"));
assert isOk(State.addOperator(s, installer, controller));
assert notAuthorized(State.addOperator(s, controller, stranger));
pass "installer_is_admin";

let v0 = s.version;
assert State.createSecret(s, controller, "shop/db") == #ok(v0 + 1);
assert State.createSecret(s, controller, "shop/db") == #ok(v0 + 1); // idempotent
assert isOk(State.requestAccess(s, controller, "shop/db", "shop/web", #ro));
assert State.view(s).requests == [{ secret = "shop/db"; principal = "shop/web"; mode = #ro; state = #pending }];
assert notAuthorized(State.approve(s, controller, "shop/db", "shop/web", #ro));
assert notAuthorized(State.approve(s, stranger, "shop/db", "shop/web", #ro));
assert State.view(s).grants == [];
assert isOk(State.approve(s, installer, "shop/db", "shop/web", #ro));
assert State.view(s).grants == [{ secret = "shop/db"; principal = "shop/web"; mode = #ro }];
assert State.view(s).requests == [];
pass "only_admins_approve";

// a granted request stays granted when asked again
let vGranted = s.version;
assert State.requestAccess(s, controller, "shop/db", "shop/web", #ro) == #ok(vGranted);
assert State.view(s).requests == [];
pass "request_idempotent";

// -- unknown secrets are refused ------------------------------------------------------------------
assert State.requestAccess(s, controller, "shop/nope", "shop/web", #ro) == #err(#unknown_secret("shop/nope"));
assert State.approve(s, installer, "shop/nope", "shop/web", #ro) == #err(#unknown_secret("shop/nope"));
assert State.view(s).requests == [];
pass "unknown_secret_refused";

// -- malformed arguments are #invalid, not traps ---------------------------------------------------
switch (State.requestAccess(s, controller, "Shop/DB", "shop/web", #ro)) { case (#err(#invalid(_))) {}; case _ assert false };
switch (State.requestAccess(s, controller, "shop/db", "web", #ro)) { case (#err(#invalid(_))) {}; case _ assert false };
switch (State.approve(s, installer, "shop/db", "other/api", #rw)) { case (#err(#invalid(_))) {}; case _ assert false };
assert State.validRef("a-b/x.y") and not State.validRef("a/b/c") and not State.validRef("/x") and not State.validRef("a/-x");
pass "invalid_arguments";

// -- revoke removes; deny records; version only grows ------------------------------------------------
let before = s.version;
assert notAuthorized(State.revoke(s, controller, "shop/db", "shop/web", #ro));
assert State.revoke(s, installer, "shop/db", "shop/web", #ro) == #ok(before + 1);
assert State.view(s).grants == [];
assert State.revoke(s, installer, "shop/db", "shop/web", #ro) == #ok(before + 1); // idempotent
assert isOk(State.requestAccess(s, controller, "shop/db", "shop/api", #rw));
assert isOk(State.deny(s, installer, "shop/db", "shop/api", #rw));
assert State.view(s).requests == [{ secret = "shop/db"; principal = "shop/api"; mode = #rw; state = #denied }];
let afterDeny = s.version;
assert State.requestAccess(s, controller, "shop/db", "shop/api", #rw) == #ok(afterDeny); // stays denied
assert afterDeny > before + 1;
pass "revoke_removes_and_version_grows";

// -- admins manage admins; never remove the last one -------------------------------------------------
assert notAuthorized(State.addAdmin(s, controller, controller));
assert isOk(State.addAdmin(s, installer, second));
assert isOk(State.removeAdmin(s, second, installer));
assert not State.isAdmin(s, installer);
assert notAuthorized(State.approve(s, installer, "shop/db", "shop/web", #ro));
assert State.removeAdmin(s, second, second) == #err(#last_admin);
assert State.isAdmin(s, second);
switch (State.addAdmin(s, second, Principal.anonymous())) { case (#err(#invalid(_))) {}; case _ assert false };
pass "admins_manage_admins";

// -- operators can be removed ------------------------------------------------------------------------
assert isOk(State.removeOperator(s, second, controller));
assert notAuthorized(State.createSecret(s, controller, "shop/other"));
pass "remove_operator";

// -- the certified hash: printed for tests/canister to compare with Python -------------------------
let h = State.init(installer);
assert isOk(State.createSecret(h, installer, "shop/db"));
assert isOk(State.createSecret(h, installer, "a-b/x"));
assert isOk(State.requestAccess(h, installer, "shop/db", "shop/web", #ro));
assert isOk(State.requestAccess(h, installer, "shop/db", "shop/api", #rw));
assert isOk(State.approve(h, installer, "shop/db", "shop/api", #rw));
assert isOk(State.requestAccess(h, installer, "a-b/x", "shop/web", #ro));
assert isOk(State.deny(h, installer, "a-b/x", "shop/web", #ro));
let before_hash = State.aclHash(h);
assert State.aclHash(h) == State.hashOf(State.view(h));
assert isOk(State.revoke(h, installer, "shop/db", "shop/api", #rw));
assert State.aclHash(h) != before_hash; // every change changes the certified hash
Debug.print("ENCODING " # debug_show (State.encode(State.view(h))));
Debug.print("HASH " # hex(State.aclHash(h)));
pass "certified_hash";

// -- names: the Kubernetes rule (DNS-1123) at create_secret and request_access -------------------
let n = State.init(installer);
for (bad in ["shop/a..b", "shop/a.-b", "shop/a-.b", "shop/.a", "shop/a.", "Shop/a", "shop/a\n"].values()) {
  switch (State.createSecret(n, installer, bad)) { case (#err(#invalid(_))) {}; case _ assert false };
};
assert isOk(State.createSecret(n, installer, "shop/a.b-c.d"));
switch (State.requestAccess(n, installer, "shop/a.b-c.d", "shop/a..b", #ro)) { case (#err(#invalid(_))) {}; case _ assert false };
assert State.view(n).secrets == ["shop/a.b-c.d"];
pass "dns1123_names";

// -- retire_secret: admins only; the secret leaves with its grants and requests --------------------
let r = State.init(installer);
assert isOk(State.addOperator(r, installer, controller));
assert isOk(State.createSecret(r, controller, "shop/db"));
assert isOk(State.createSecret(r, controller, "shop/keep"));
assert isOk(State.approve(r, installer, "shop/db", "shop/web", #ro));
assert isOk(State.requestAccess(r, controller, "shop/db", "shop/api", #rw));
assert isOk(State.approve(r, installer, "shop/keep", "shop/web", #ro));
assert notAuthorized(State.retireSecret(r, controller, "shop/db"));
let vRetire = r.version;
assert State.retireSecret(r, installer, "shop/db") == #ok(vRetire + 1);
assert State.view(r).secrets == ["shop/keep"];
assert State.view(r).grants == [{ secret = "shop/keep"; principal = "shop/web"; mode = #ro }];
assert State.view(r).requests == [];
assert State.retireSecret(r, installer, "shop/db") == #ok(vRetire + 1); // idempotent
pass "retire_secret";
