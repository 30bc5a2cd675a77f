/// Interpreter test of the actor shell (src/Main.mo) with test/fake/CertifiedData.mo standing in
/// for mo:core/CertifiedData. Run: node scripts/moc.mjs run --fake-certified-data test/ActorTest.mo
/// The interpreter sends every message from one principal: the installer, so the first admin.

import Debug "mo:core/Debug";
import Nat8 "mo:core/Nat8";
import Text "mo:core/Text";
import Main "../src/Main";
import State "../src/State";

func hex(b : Blob) : Text {
  let digits = Text.toArray("0123456789abcdef");
  var out = "";
  for (byte in b.values()) {
    let n = Nat8.toNat(byte);
    out #= Text.fromChar(digits[n / 16]) # Text.fromChar(digits[n % 16]);
  };
  out;
};

let acl = await Main.RotorAcl();
let me = await acl.whoami();
let members = await acl.members();
assert members.admins == [me];
assert members.operators == [];
Debug.print("PASS installer_is_first_admin");

assert (await acl.create_secret("shop/db")) == #ok(1);
assert (await acl.request_access("shop/db", "shop/web", #ro)) == #ok(2);
assert (await acl.requests()).size() == 1;
assert (await acl.approve("shop/db", "shop/web", #ro)) == #ok(3);
assert (await acl.request_access("shop/nope", "shop/web", #ro)) == #err(#unknown_secret("shop/nope"));
assert (await acl.remove_admin(me)) == #err(#last_admin);
let view = await acl.acl();
assert view.acl.version == 3;
assert view.acl.grants == [{ secret = "shop/db"; principal = "shop/web"; mode = #ro }];
assert view.certificate == null;
Debug.print("EXPECT " # hex(State.hashOf(view.acl)));
Debug.print("PASS shell_methods");
