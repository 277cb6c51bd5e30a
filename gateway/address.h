// RFC 5321 paths and mailboxes, parsed from the bytes after "MAIL FROM:"
// or "RCPT TO:" into values.  Pure functions: no I/O, no policy; whether
// an address is local, barred or may be relayed to is policy.h's business.
//
// Grammar accepted (RFC 5321 4.1.2, RFC 6531 for UTF-8):
//   "<" [source-route ":"] local "@" domain ">"    the normal form
//   "<>"                                            the null reverse-path
//   "<postmaster>" (any case)                       RFC 5321 4.5.1
//   local "@" domain                                bare, no brackets
// Leading blanks are skipped (clients that send "MAIL FROM: <a@b>").
// The local part is a dot-string or a quoted string; UTF-8 (well-formed,
// non-ASCII) is allowed in both parts.  Domains are LDH labels (or UTF-8
// U-labels) or an address literal "[192.0.2.1]" / "[IPv6:...]".  A
// trailing dot on a domain ("other.example.") is a syntax error.
// A source route is accepted and dropped (source_route = true): RFC 5321
// says a server SHOULD ignore it and deliver to the final mailbox.
//
// Limits (RFC 5321 4.5.3.1): local part 64 octets, domain 255, path 256.
#pragma once

#include <string>
#include <string_view>

namespace ferry::gw {

struct Mailbox {
  std::string local;   // unquoted: "\"a b\"@x" gives local = "a b"
  std::string domain;  // as written (case kept); empty only for postmaster
  // The mailbox as it goes on the wire: the local part quoted again when
  // it is not a plain dot-string; "local@domain" (or just "local").
  std::string str() const;
};

struct PathParse {
  bool ok = false;
  bool null_path = false;  // "<>"
  Mailbox box;
  // Text after the path (ESMTP parameters), leading blanks skipped.
  std::string rest;
  std::string error;          // why not ok (for 501/553)
  bool source_route = false;  // "<@a,@b:u@d>" seen (dropped)
  bool quoted_local = false;  // local part was a quoted string
};

// Accepts "<a@b>", " <a@b>" (space after colon), bare "a@b", "<>",
// quoted local parts, UTF-8 (SMTPUTF8), source routes (RFC 5321 4.1.2:
// accepted, route ignored).
PathParse parse_path(std::string_view after_colon);

// ASCII lower-casing (domains and user names compare case-insensitively;
// UTF-8 bytes are left as they are).
std::string lower_ascii(std::string_view s);

}  // namespace ferry::gw
