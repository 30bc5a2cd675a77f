/// The types of the canister's Candid interface (acl.did is generated from these).
module {
  /// rw: writes (generates and rotates) the secret; ro: reads a view of it.
  public type Mode = { #rw; #ro };

  /// A request that an admin has not approved. Approved requests become grants and leave the
  /// request list; denied ones stay (so the controller does not ask again) until approved.
  public type RequestState = { #pending; #denied };

  /// secret: "namespace/name" of a RotatingSecret; principal: "namespace/serviceaccount".
  public type Grant = { secret : Text; principal : Text; mode : Mode };

  public type Request = {
    secret : Text;
    principal : Text;
    mode : Mode;
    state : RequestState;
  };

  /// One consistent reading of the ACL; `version` grows by one on every change.
  public type Acl = {
    version : Nat64;
    secrets : [Text];
    grants : [Grant];
    requests : [Request];
  };

  /// The ACL plus the IC certificate (CertifiedData.getCertificate()) whose
  /// /canister/<id>/certified_data is sha256 of the ACL's canonical encoding (see State.encode).
  public type CertifiedAcl = { acl : Acl; certificate : ?Blob };

  public type Role = { #admin; #operator };

  /// User errors, answered as #err (never a trap).
  public type Error = {
    /// The caller (principal text) lacks the role the method needs.
    #not_authorized : { caller : Text; needs : Role };
    /// The secret was never registered (create_secret).
    #unknown_secret : Text;
    /// An argument is malformed; the text names it and the fix.
    #invalid : Text;
    /// Removing this admin would leave the canister without one.
    #last_admin;
  };

  /// #ok carries the ACL version after the call.
  public type Result = { #ok : Nat64; #err : Error };

  public type Members = { admins : [Principal]; operators : [Principal] };
};
