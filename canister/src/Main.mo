/// Rotor's ACL canister: a registry of secrets, access requests, and grants that admins approve,
/// deny and revoke. All decisions live in State.mo; this actor passes the caller in and keeps the
/// certified data (sha256 of the ACL's canonical encoding) in step after every update.
///
/// The installer (the caller of the install) is the first admin. `persistent`: every field is
/// stable, so an upgrade keeps the state (checked by the stable signature, acl.most).

import CertifiedData "mo:core/CertifiedData";
import State "State";
import Types "Types";

shared ({ caller = installer }) persistent actor class RotorAcl() {
  let state : State.State = State.init(installer);

  func certify() {
    CertifiedData.set(State.aclHash(state));
  };

  // On install; postupgrade below does the same after an upgrade.
  certify();

  system func postupgrade() {
    certify();
  };

  func updated(r : Types.Result) : Types.Result {
    switch r { case (#ok(_)) certify(); case (#err(_)) {} };
    r;
  };

  // -- operators (the Rotor controller) -------------------------------------------------------

  public shared ({ caller }) func create_secret(secret : Text) : async Types.Result {
    updated(State.createSecret(state, caller, secret));
  };

  public shared ({ caller }) func request_access(secret : Text, principal : Text, mode : Types.Mode) : async Types.Result {
    updated(State.requestAccess(state, caller, secret, principal, mode));
  };

  // -- admins ---------------------------------------------------------------------------------

  public shared ({ caller }) func approve(secret : Text, principal : Text, mode : Types.Mode) : async Types.Result {
    updated(State.approve(state, caller, secret, principal, mode));
  };

  public shared ({ caller }) func deny(secret : Text, principal : Text, mode : Types.Mode) : async Types.Result {
    updated(State.deny(state, caller, secret, principal, mode));
  };

  public shared ({ caller }) func revoke(secret : Text, principal : Text, mode : Types.Mode) : async Types.Result {
    updated(State.revoke(state, caller, secret, principal, mode));
  };

  public shared ({ caller }) func retire_secret(secret : Text) : async Types.Result {
    updated(State.retireSecret(state, caller, secret));
  };

  public shared ({ caller }) func add_admin(p : Principal) : async Types.Result {
    updated(State.addAdmin(state, caller, p));
  };

  public shared ({ caller }) func remove_admin(p : Principal) : async Types.Result {
    updated(State.removeAdmin(state, caller, p));
  };

  public shared ({ caller }) func add_operator(p : Principal) : async Types.Result {
    updated(State.addOperator(state, caller, p));
  };

  public shared ({ caller }) func remove_operator(p : Principal) : async Types.Result {
    updated(State.removeOperator(state, caller, p));
  };

  // -- reading (anyone) -------------------------------------------------------------------------

  /// The whole ACL and the certificate over its hash (null in an update call or inter-canister
  /// call, where the IC gives no certificate).
  public query func acl() : async Types.CertifiedAcl {
    { acl = State.view(state); certificate = CertifiedData.getCertificate() };
  };

  public query func requests() : async [Types.Request] {
    State.view(state).requests;
  };

  public query func members() : async Types.Members {
    State.members(state);
  };

  public shared query ({ caller }) func whoami() : async Principal {
    caller;
  };
};
