// Users and aliases.  Password hashes are PBKDF2-HMAC-SHA256 from OpenSSL;
// alias expansion is done once at load time so a lookup is one map find.

#include "gateway/users.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <charconv>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "gateway/address.h"
#include "gateway/files.h"

namespace ferry::gw {
namespace {

constexpr unsigned kDefaultIterations = 100000;
constexpr unsigned kMaxIterations = 10000000;  // bounds a hostile file
constexpr size_t kSaltBytes = 16;
constexpr size_t kKeyBytes = 32;
constexpr std::string_view kScheme = "pbkdf2-sha256";

std::string b64_encode(const unsigned char* p, size_t n) {
  std::string out(4 * ((n + 2) / 3), '\0');
  int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), p,
                            static_cast<int>(n));
  out.resize(static_cast<size_t>(len));
  return out;
}

// Standard base64 with padding; false if malformed.
bool b64_decode(std::string_view in, std::string& out) {
  if (in.empty() || in.size() % 4 != 0) return false;
  out.assign(3 * in.size() / 4, '\0');
  int len = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(in.data()),
                            static_cast<int>(in.size()));
  if (len < 0) return false;
  // EVP_DecodeBlock counts the padding as zero bytes; drop them.
  size_t pad = 0;
  if (in.back() == '=') ++pad;
  if (in.size() > 1 && in[in.size() - 2] == '=') ++pad;
  out.resize(static_cast<size_t>(len) - pad);
  return true;
}

struct ParsedHash {
  unsigned iterations = 0;
  std::string salt, key;
};

bool parse_hash(std::string_view h, ParsedHash& out) {
  std::vector<std::string_view> f;
  size_t start = 0;
  for (;;) {
    size_t d = h.find('$', start);
    f.push_back(h.substr(start, d == h.npos ? h.npos : d - start));
    if (d == h.npos) break;
    start = d + 1;
  }
  if (f.size() != 4 || f[0] != kScheme) return false;
  auto [ptr, ec] =
      std::from_chars(f[1].data(), f[1].data() + f[1].size(), out.iterations);
  if (ec != std::errc() || ptr != f[1].data() + f[1].size()) return false;
  if (out.iterations == 0 || out.iterations > kMaxIterations) return false;
  return b64_decode(f[2], out.salt) && b64_decode(f[3], out.key) &&
         !out.salt.empty() && out.key.size() == kKeyBytes;
}

bool derive(std::string_view password, std::string_view salt,
            unsigned iterations, unsigned char* key) {
  return PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                           reinterpret_cast<const unsigned char*>(salt.data()),
                           static_cast<int>(salt.size()),
                           static_cast<int>(iterations), EVP_sha256(),
                           static_cast<int>(kKeyBytes), key) == 1;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) {
    s.remove_suffix(1);
  }
  return s;
}

// Calls fn(line_number, line) for each non-blank, non-comment line; stops
// at the first false.
bool for_each_line(std::string_view text,
                   const std::function<bool(int, std::string_view)>& fn) {
  int n = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == text.npos ? text.size() : nl + 1);
    ++n;
    line = trim(line);
    if (line.empty() || line.front() == '#') continue;
    if (!fn(n, line)) return false;
  }
  return true;
}


std::string where(std::string_view name, int line) {
  return std::string(name) + ":" + std::to_string(line) + ": ";
}

// A hash of an unknown password, so that authenticate() for an unknown
// user costs the same as for a known one.
const std::string& dummy_hash() {
  static const std::string h = hash_password("ferry-dummy-password");
  return h;
}

}  // namespace

bool Users::valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name.front() == '.') return false;
  for (unsigned char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
              c == '+' || c >= 0x80;
    if (!ok) return false;
  }
  return true;
}

std::unique_ptr<Users> Users::parse(std::string_view users_text,
                                    std::string_view users_name,
                                    std::string_view aliases_text,
                                    std::string_view aliases_name,
                                    std::string& error) {
  std::unique_ptr<Users> u(new Users);

  // Users: name:hash.
  bool ok = for_each_line(users_text, [&](int n, std::string_view line) {
    size_t colon = line.find(':');
    if (colon == line.npos) {
      error = where(users_name, n) + "expected name:hash";
      return false;
    }
    std::string name = lower_ascii(trim(line.substr(0, colon)));
    std::string_view hash = trim(line.substr(colon + 1));
    if (!valid_name(name)) {
      error = where(users_name, n) + "bad user name '" + name + "'";
      return false;
    }
    ParsedHash ph;
    if (hash != "!" && hash != "*" && !parse_hash(hash, ph)) {
      error = where(users_name, n) + "user " + name +
              ": expected a hash such as "
              "pbkdf2-sha256$100000$SALT$HASH, or ! for no login";
      return false;
    }
    if (!u->hashes_.emplace(name, std::string(hash)).second) {
      error = where(users_name, n) + "user " + name + " listed twice";
      return false;
    }
    return true;
  });
  if (!ok) return nullptr;

  // Aliases: alias: target, target.  Read all, then expand.
  std::map<std::string, std::vector<std::string>> raw;
  std::map<std::string, int> line_of;
  ok = for_each_line(aliases_text, [&](int n, std::string_view line) {
    size_t colon = line.find(':');
    if (colon == line.npos) {
      error = where(aliases_name, n) + "expected alias: target, ...";
      return false;
    }
    std::string name = lower_ascii(trim(line.substr(0, colon)));
    if (!valid_name(name)) {
      error = where(aliases_name, n) + "bad alias name '" + name + "'";
      return false;
    }
    if (u->hashes_.count(name)) {
      error = where(aliases_name, n) + "alias " + name + " is also a user name";
      return false;
    }
    if (raw.count(name)) {
      error = where(aliases_name, n) + "alias " + name + " listed twice";
      return false;
    }
    std::vector<std::string> targets;
    std::string_view rest = line.substr(colon + 1);
    std::string item;
    for (size_t i = 0; i <= rest.size(); ++i) {
      char c = i < rest.size() ? rest[i] : ',';
      if (c == ',' || c == ' ' || c == '\t') {
        if (!item.empty()) targets.push_back(item);
        item.clear();
      } else {
        item.push_back(c);
      }
    }
    if (targets.empty()) {
      error = where(aliases_name, n) + "alias " + name + " has no targets";
      return false;
    }
    for (std::string& t : targets) {
      if (t.find('@') != t.npos) {
        PathParse p = parse_path(t);
        if (!p.ok || !p.rest.empty() || p.source_route) {
          error = where(aliases_name, n) + "alias " + name + ": bad address '" +
                  t + "'";
          return false;
        }
      } else {
        t = lower_ascii(t);
        if (!valid_name(t)) {
          error = where(aliases_name, n) + "alias " + name + ": bad target '" +
                  t + "'";
          return false;
        }
      }
    }
    raw.emplace(name, std::move(targets));
    line_of.emplace(name, n);
    return true;
  });
  if (!ok) return nullptr;

  // Expand each alias to users and remote addresses, refusing loops.
  std::function<bool(const std::string&, std::vector<std::string>&,
                     std::set<std::string>&, std::set<std::string>&)>
      expand_into = [&](const std::string& name, std::vector<std::string>& out,
                        std::set<std::string>& seen,
                        std::set<std::string>& stack) {
        if (!stack.insert(name).second) {
          error = where(aliases_name, line_of[name]) + "alias " + name +
                  " expands to itself";
          return false;
        }
        for (const std::string& t : raw[name]) {
          if (t.find('@') == t.npos && raw.count(t)) {
            if (!expand_into(t, out, seen, stack)) return false;
          } else if (t.find('@') == t.npos && !u->hashes_.count(t)) {
            error = where(aliases_name, line_of[name]) + "alias " + name +
                    ": unknown user '" + t + "'";
            return false;
          } else if (seen.insert(t).second) {
            out.push_back(t);
          }
        }
        stack.erase(name);
        return true;
      };
  for (const auto& [name, targets] : raw) {
    std::vector<std::string> out;
    std::set<std::string> seen, stack;
    if (!expand_into(name, out, seen, stack)) return nullptr;
    u->aliases_.emplace(name, std::move(out));
  }
  return u;
}

std::unique_ptr<Users> Users::load(const std::string& users_file,
                                   const std::string& aliases_file,
                                   std::string& error) {
  std::string users_text, aliases_text;
  if (!read_text_file(users_file, users_text, error)) return nullptr;
  if (!aliases_file.empty() && !read_text_file(aliases_file, aliases_text, error)) {
    return nullptr;
  }
  return parse(users_text, users_file, aliases_text, aliases_file, error);
}

bool Users::exists(std::string_view user) const {
  return hashes_.count(lower_ascii(user)) != 0;
}

bool Users::authenticate(std::string_view user,
                         std::string_view password) const {
  // Unknown users and users without a login cost one PBKDF2 run like
  // everyone else, so timing does not tell which names exist.
  auto it = hashes_.find(lower_ascii(user));
  if (it == hashes_.end() || it->second == "!" || it->second == "*") {
    verify_password(password, dummy_hash());  // result unused
    return false;
  }
  return verify_password(password, it->second);
}

std::vector<std::string> Users::expand(std::string_view local_part) const {
  std::string name = lower_ascii(local_part);
  if (auto a = aliases_.find(name); a != aliases_.end()) return a->second;
  if (hashes_.count(name)) return {name};
  return {};
}

std::string hash_password(std::string_view password) {
  return hash_password(password, kDefaultIterations);
}

std::string hash_password(std::string_view password, unsigned iterations) {
  unsigned char salt[kSaltBytes], key[kKeyBytes];
  // Failure of the system's random source or of PBKDF2 is an environment
  // fault we cannot work around; an empty string is never a valid hash.
  if (RAND_bytes(salt, sizeof salt) != 1) return {};
  std::string_view salt_view(reinterpret_cast<const char*>(salt), sizeof salt);
  if (!derive(password, salt_view, iterations, key)) return {};
  return std::string(kScheme) + "$" + std::to_string(iterations) + "$" +
         b64_encode(salt, sizeof salt) + "$" + b64_encode(key, sizeof key);
}

bool verify_password(std::string_view password, std::string_view hash) {
  ParsedHash ph;
  if (!parse_hash(hash, ph)) return false;
  unsigned char key[kKeyBytes];
  if (!derive(password, ph.salt, ph.iterations, key)) return false;
  return CRYPTO_memcmp(key, ph.key.data(), kKeyBytes) == 0;
}

}  // namespace ferry::gw
