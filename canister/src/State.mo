/// The ACL's state and every decision on it, as plain functions of (state, caller, arguments).
///
/// No system calls here (no CertifiedData, no msg.caller): Main.mo passes the caller in and
/// certifies the hash after each update. That keeps this module runnable in the Motoko
/// interpreter, which is how canister/test/AclTest.mo tests it.

import Map "mo:core/Map";
import Set "mo:core/Set";
import Text "mo:core/Text";
import Nat64 "mo:core/Nat64";
import Principal "mo:core/Principal";
import Iter "mo:core/Iter";
import List "mo:core/List";
import Types "Types";
import Sha256 "Sha256";

module {
  public type Mode = Types.Mode;
  public type Grant = Types.Grant;
  public type Request = Types.Request;
  public type Result = Types.Result;

  /// Everything the canister keeps. Stable: a `persistent actor` keeps it across upgrades.
  public type State = {
    var version : Nat64;
    admins : Set.Set<Principal>;
    operators : Set.Set<Principal>;
    secrets : Set.Set<Text>;
    /// keyed by `secret principal mode`, which sorts like (secret, principal, mode)
    grants : Map.Map<Text, Grant>;
    requests : Map.Map<Text, Request>;
  };

  public func init(installer : Principal) : State {
    let admins = Set.empty<Principal>();
    Set.add(admins, Principal.compare, installer);
    {
      var version = 0 : Nat64;
      admins;
      operators = Set.empty<Principal>();
      secrets = Set.empty<Text>();
      grants = Map.empty<Text, Grant>();
      requests = Map.empty<Text, Request>();
    };
  };

  public func modeText(m : Mode) : Text {
    switch m { case (#rw) "rw"; case (#ro) "ro" };
  };

  func stateText(s : Types.RequestState) : Text {
    switch s { case (#pending) "pending"; case (#denied) "denied" };
  };

  func key(secret : Text, principal : Text, mode : Mode) : Text {
    secret # " " # principal # " " # modeText(mode);
  };

  // -- validation --------------------------------------------------------------------------

  func isAlnum(c : Char) : Bool {
    (c >= 'a' and c <= 'z') or (c >= '0' and c <= '9');
  };

  /// The Kubernetes naming rule (DNS-1123), the same as rotor/names.py: a namespace is a label
  /// (at most 63 of lower-case letters, digits and '-', starting and ending with a letter or
  /// digit); a name is a subdomain (at most 253; labels like that joined by single dots, so
  /// "a..b", "a.-b" and "a-.b" are refused). tests/canister checks both sides on one list.
  func validLabel(cs : [Char], from : Nat, to : Nat) : Bool {
    // cs[from..to) is one label
    if (to <= from) return false;
    if (not isAlnum(cs[from]) or not isAlnum(cs[to - 1])) return false;
    var i = from;
    while (i < to) {
      if (not (isAlnum(cs[i]) or cs[i] == '-')) return false;
      i += 1;
    };
    true;
  };

  func validPart(t : Text, max : Nat, dots : Bool) : Bool {
    let cs = Text.toArray(t);
    let n = cs.size();
    if (n == 0 or n > max) return false;
    var start = 0;
    var i = 0;
    while (i < n) {
      if (cs[i] == '.') {
        if (not dots or not validLabel(cs, start, i)) return false;
        start := i + 1;
      };
      i += 1;
    };
    validLabel(cs, start, n);
  };

  /// "namespace/name": what a secret reference or a principal must look like.
  public func validRef(t : Text) : Bool {
    let parts = Iter.toArray(Text.split(t, #char '/'));
    parts.size() == 2 and validPart(parts[0], 63, false) and validPart(parts[1], 253, true);
  };

  func namespaceOf(t : Text) : Text {
    switch (Text.split(t, #char '/').next()) { case (?ns) ns; case null "" };
  };

  func checkTriple(secret : Text, principal : Text, mode : Mode) : ?Types.Error {
    if (not validRef(secret)) {
      return ?#invalid("secret " # debug_show secret # " is not namespace/name");
    };
    if (not validRef(principal)) {
      return ?#invalid("principal " # debug_show principal # " is not namespace/serviceaccount");
    };
    if (mode == #rw and namespaceOf(secret) != namespaceOf(principal)) {
      return ?#invalid(
        "principal " # principal # " cannot write " # secret
        # " (another namespace); a writer must be in the secret's namespace, use mode ro"
      );
    };
    null;
  };

  // -- roles ----------------------------------------------------------------------------------

  public func isAdmin(s : State, p : Principal) : Bool {
    Set.contains(s.admins, Principal.compare, p);
  };

  /// Operators (the Rotor controller's identity) register secrets and file requests;
  /// admins may do that too.
  public func isOperator(s : State, p : Principal) : Bool {
    isAdmin(s, p) or Set.contains(s.operators, Principal.compare, p);
  };

  func denied(caller : Principal, needs : Types.Role) : Result {
    #err(#not_authorized({ caller = Principal.toText(caller); needs }));
  };

  func bump(s : State) : Result {
    s.version += 1;
    #ok(s.version);
  };

  // -- operator methods -----------------------------------------------------------------------

  /// Make a secret known (idempotent).
  public func createSecret(s : State, caller : Principal, secret : Text) : Result {
    if (not isOperator(s, caller)) return denied(caller, #operator);
    if (not validRef(secret)) {
      return #err(#invalid("secret " # debug_show secret # " is not namespace/name"));
    };
    if (Set.contains(s.secrets, Text.compare, secret)) return #ok(s.version);
    Set.add(s.secrets, Text.compare, secret);
    bump(s);
  };

  /// Record a pending request (idempotent: a granted one stays granted, a pending or denied one
  /// stays as it is). A request for a secret that was never created is refused.
  public func requestAccess(s : State, caller : Principal, secret : Text, principal : Text, mode : Mode) : Result {
    if (not isOperator(s, caller)) return denied(caller, #operator);
    switch (checkTriple(secret, principal, mode)) { case (?e) return #err(e); case null {} };
    if (not Set.contains(s.secrets, Text.compare, secret)) return #err(#unknown_secret(secret));
    let k = key(secret, principal, mode);
    if (Map.containsKey(s.grants, Text.compare, k) or Map.containsKey(s.requests, Text.compare, k)) {
      return #ok(s.version);
    };
    Map.add(s.requests, Text.compare, k, { secret; principal; mode; state = #pending });
    bump(s);
  };

  // -- admin methods ----------------------------------------------------------------------------

  /// Grant access (with or without a request); the request, if any, leaves the list.
  public func approve(s : State, caller : Principal, secret : Text, principal : Text, mode : Mode) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    switch (checkTriple(secret, principal, mode)) { case (?e) return #err(e); case null {} };
    if (not Set.contains(s.secrets, Text.compare, secret)) return #err(#unknown_secret(secret));
    let k = key(secret, principal, mode);
    let hadRequest = Map.delete(s.requests, Text.compare, k);
    if (Map.containsKey(s.grants, Text.compare, k) and not hadRequest) return #ok(s.version);
    Map.add(s.grants, Text.compare, k, { secret; principal; mode });
    bump(s);
  };

  /// Deny a request (recorded as denied; an existing grant is removed too).
  public func deny(s : State, caller : Principal, secret : Text, principal : Text, mode : Mode) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    switch (checkTriple(secret, principal, mode)) { case (?e) return #err(e); case null {} };
    if (not Set.contains(s.secrets, Text.compare, secret)) return #err(#unknown_secret(secret));
    let k = key(secret, principal, mode);
    let hadGrant = Map.delete(s.grants, Text.compare, k);
    switch (Map.get(s.requests, Text.compare, k)) {
      case (?r) { if (r.state == #denied and not hadGrant) return #ok(s.version) };
      case null {};
    };
    Map.add(s.requests, Text.compare, k, { secret; principal; mode; state = #denied });
    bump(s);
  };

  /// Remove a grant (idempotent). The names are not checked: whatever is stored can be removed,
  /// also an entry an older canister accepted under a looser naming rule.
  public func revoke(s : State, caller : Principal, secret : Text, principal : Text, mode : Mode) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    if (not Map.delete(s.grants, Text.compare, key(secret, principal, mode))) {
      return #ok(s.version);
    };
    bump(s);
  };

  /// Retire a secret: it leaves the registry with every grant and request on it (idempotent).
  /// The name is not checked, so a name an older canister accepted can be retired too.
  public func retireSecret(s : State, caller : Principal, secret : Text) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    var changed = Set.delete(s.secrets, Text.compare, secret);
    for (k in Iter.toArray(Map.keys(s.grants)).values()) {
      switch (Map.get(s.grants, Text.compare, k)) {
        case (?g) { if (g.secret == secret) { ignore Map.delete(s.grants, Text.compare, k); changed := true } };
        case null {};
      };
    };
    for (k in Iter.toArray(Map.keys(s.requests)).values()) {
      switch (Map.get(s.requests, Text.compare, k)) {
        case (?r) { if (r.secret == secret) { ignore Map.delete(s.requests, Text.compare, k); changed := true } };
        case null {};
      };
    };
    if (not changed) return #ok(s.version);
    bump(s);
  };

  public func addAdmin(s : State, caller : Principal, p : Principal) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    if (Principal.isAnonymous(p)) return #err(#invalid("the anonymous principal cannot be an admin"));
    if (not Set.insert(s.admins, Principal.compare, p)) return #ok(s.version);
    bump(s);
  };

  public func removeAdmin(s : State, caller : Principal, p : Principal) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    if (not isAdmin(s, p)) return #ok(s.version);
    if (Set.size(s.admins) == 1) return #err(#last_admin);
    ignore Set.delete(s.admins, Principal.compare, p);
    bump(s);
  };

  public func addOperator(s : State, caller : Principal, p : Principal) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    if (Principal.isAnonymous(p)) return #err(#invalid("the anonymous principal cannot be an operator"));
    if (not Set.insert(s.operators, Principal.compare, p)) return #ok(s.version);
    bump(s);
  };

  public func removeOperator(s : State, caller : Principal, p : Principal) : Result {
    if (not isAdmin(s, caller)) return denied(caller, #admin);
    if (not Set.delete(s.operators, Principal.compare, p)) return #ok(s.version);
    bump(s);
  };

  // -- reading ------------------------------------------------------------------------------------

  public func view(s : State) : Types.Acl {
    {
      version = s.version;
      secrets = Set.toArray(s.secrets);
      grants = Iter.toArray(Map.values(s.grants));
      requests = Iter.toArray(Map.values(s.requests));
    };
  };

  public func members(s : State) : Types.Members {
    { admins = Set.toArray(s.admins); operators = Set.toArray(s.operators) };
  };

  /// The canonical encoding that is certified, in the order `view` returns the lists:
  ///
  ///   rotor-acl/1\n
  ///   version <n>\n
  ///   secret <ns/name>\n                                  (each secret)
  ///   grant <secret> <principal> <rw|ro>\n                 (each grant)
  ///   request <secret> <principal> <rw|ro> <pending|denied>\n  (each request)
  ///
  /// Names never contain spaces or newlines (validRef), so the encoding is unambiguous.
  public func encode(acl : Types.Acl) : Text {
    let lines = List.empty<Text>();
    List.add(lines, "rotor-acl/1\nversion " # Nat64.toText(acl.version) # "\n");
    for (secret in acl.secrets.values()) { List.add(lines, "secret " # secret # "\n") };
    for (g in acl.grants.values()) {
      List.add(lines, "grant " # g.secret # " " # g.principal # " " # modeText(g.mode) # "\n");
    };
    for (r in acl.requests.values()) {
      List.add(
        lines,
        "request " # r.secret # " " # r.principal # " " # modeText(r.mode) # " " # stateText(r.state) # "\n",
      );
    };
    Text.join(List.values(lines), "");
  };

  /// sha256(encode(view(s))): what the canister passes to CertifiedData.set.
  public func aclHash(s : State) : Blob {
    Sha256.hash(Text.encodeUtf8(encode(view(s))));
  };

  public func hashOf(acl : Types.Acl) : Blob {
    Sha256.hash(Text.encodeUtf8(encode(acl)));
  };
};
