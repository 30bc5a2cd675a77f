/// Test double of mo:core/CertifiedData for the Motoko interpreter, which has no certified data:
/// `set` prints "CERTIFIED <hex>" (tests/canister compares it with the ACL's hash) and
/// `getCertificate` returns null, as on the IC in an update call.
/// scripts/moc.mjs puts it in place of the core file for `run --fake-certified-data` only.
import Prim "mo:⛔";
import Text "Text";

module {
  public func set(data : Blob) {
    let digits = Text.toArray("0123456789abcdef");
    var hex = "";
    for (b in data.vals()) {
      let n = Prim.nat8ToNat(b);
      hex #= Text.fromChar(digits[n / 16]) # Text.fromChar(digits[n % 16]);
    };
    Prim.debugPrint("CERTIFIED " # hex);
  };

  public func getCertificate() : ?Blob { null };
};
