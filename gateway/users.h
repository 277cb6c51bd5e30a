// Local users and aliases, read from two files named in [local].
//
// Users file: one `name:hash` line per user; blank lines and lines
// starting with `#` are ignored.  hash is
//   pbkdf2-sha256$ITERATIONS$SALT_BASE64$HASH_BASE64
// (OpenSSL PKCS5_PBKDF2_HMAC with SHA-256, 16-byte random salt, 32-byte
// key); hash_password() makes one.  A user with hash `!` (or `*`) exists
// for delivery but cannot log in.
//
// Aliases file: `alias: target, target, ...` lines; a target is a local
// user, another alias, or a remote address (anything with an `@`).  One
// alias may name several users.  Loops and unknown local targets are
// load errors.
//
// Names are case-insensitive (stored lower-case) and limited to letters,
// digits, UTF-8 and `.-_+` so that a name is always a safe Maildir
// directory and never carries routing characters (`%`, `!`, `@`, `/`).
//
// Concurrency: immutable after load(); any number of threads may read.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::gw {

class Users {
 public:
  // Reads both files.  An empty aliases_file name means "no aliases"; a
  // missing users file is an error.  On failure returns nullptr and sets
  // `error` ("users:3: expected name:hash").
  static std::unique_ptr<Users> load(const std::string& users_file,
                                     const std::string& aliases_file,
                                     std::string& error);
  // The same from text (tests); names stand in for the file names.
  static std::unique_ptr<Users> parse(std::string_view users_text,
                                      std::string_view users_name,
                                      std::string_view aliases_text,
                                      std::string_view aliases_name,
                                      std::string& error);

  bool exists(std::string_view user) const;

  // True only for an existing user whose password matches.  Takes about
  // the same time for unknown users as for known ones.
  bool authenticate(std::string_view user, std::string_view password) const;

  // Local part -> local users and/or remote addresses (aliases expanded,
  // case-insensitive); empty if unknown.  No duplicates; order of first
  // appearance.
  std::vector<std::string> expand(std::string_view local_part) const;

  // A name that may be used as a user or alias name.
  static bool valid_name(std::string_view name);

 private:
  Users() = default;
  std::map<std::string, std::string> hashes_;  // user -> hash text
  std::map<std::string, std::vector<std::string>> aliases_;  // expanded
};

// A new salted hash in the format above (100000 iterations by default).
std::string hash_password(std::string_view password);
std::string hash_password(std::string_view password, unsigned iterations);

// True if `password` matches `hash` (constant-time compare).  False for a
// malformed hash.
bool verify_password(std::string_view password, std::string_view hash);

}  // namespace ferry::gw
