#include "gateway/peer_tls.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace ferry::gw {
namespace {

std::string openssl_reason() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string bio_text(BIO* b) {
  char* data = nullptr;
  long n = BIO_get_mem_data(b, &data);
  return std::string(data, n > 0 ? static_cast<size_t>(n) : 0);
}

BioPtr mem_bio(std::string_view text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string hex_of(const unsigned char* p, size_t n) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += hex[p[i] >> 4];
    out += hex[p[i] & 15];
  }
  return out;
}

std::string fingerprint_of(const X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha256(), md, &n) != 1) return {};
  return "sha256:" + hex_of(md, n);
}

constexpr std::string_view kPskPrefix = "ferry-psk-v1:";

// Both suites hash with SHA-256, so one PSK (bound to SHA-256) fits
// whichever the two sides settle on.
constexpr const char* kSuites =
    "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256";

// OpenSSL treats an external PSK as a resumed session, and a server that
// verifies peers resumes only sessions of its own session id context.
constexpr unsigned char kSidContext[] = "ferry-link";

// Where a handshake keeps the pin whose PSK it offered or accepted.
int pin_index() {
  static const int index =
      SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

// Where an SSL_CTX keeps its PeerTls, for the PSK callbacks.
int owner_index() {
  static const int index =
      SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

}  // namespace

// ---- Pre-shared keys ----------------------------------------------------

std::string generate_psk() {
  unsigned char key[kPskBytes];
  if (RAND_priv_bytes(key, sizeof key) != 1) return {};
  unsigned char b64[4 * ((kPskBytes + 2) / 3) + 1];
  int n = EVP_EncodeBlock(b64, key, sizeof key);
  OPENSSL_cleanse(key, sizeof key);
  std::string out(kPskPrefix);
  out.append(reinterpret_cast<const char*>(b64), static_cast<size_t>(n));
  out += '\n';
  return out;
}

bool parse_psk(std::string_view text, std::string& bytes, std::string& error) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' ||
                           text.back() == ' ' || text.back() == '\t')) {
    text.remove_suffix(1);
  }
  if (text.substr(0, kPskPrefix.size()) != kPskPrefix) {
    error = "not a ferry PSK (expected one line \"ferry-psk-v1:BASE64\")";
    return false;
  }
  text.remove_prefix(kPskPrefix.size());

  // 32 bytes are 44 base64 characters ending in exactly one '='.  Encoding
  // the result again must give the same text: that refuses stray
  // characters and non-canonical padding bits.
  constexpr size_t kLen = 4 * ((kPskBytes + 2) / 3);
  unsigned char raw[kLen];
  if (text.size() != kLen || text.find('\n') != std::string_view::npos ||
      EVP_DecodeBlock(raw, reinterpret_cast<const unsigned char*>(text.data()),
                      static_cast<int>(kLen)) != kPskBytes + 1) {
    error = "the key is not " + std::to_string(kPskBytes) + " bytes of base64";
    return false;
  }
  unsigned char again[kLen + 1];
  EVP_EncodeBlock(again, raw, kPskBytes);
  if (std::string_view(reinterpret_cast<const char*>(again), kLen) != text) {
    OPENSSL_cleanse(raw, sizeof raw);
    error = "the key is not " + std::to_string(kPskBytes) + " bytes of base64";
    return false;
  }
  bytes.assign(reinterpret_cast<const char*>(raw), kPskBytes);
  OPENSSL_cleanse(raw, sizeof raw);
  return true;
}

bool load_psk_file(const std::string& path, std::string& bytes,
                   std::string& error) {
  // Open first, then look at what was opened: no race between the check
  // of the mode and the read.
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    error = path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  std::string text;
  bool ok = ::fstat(fd, &st) == 0;
  if (!ok) {
    error = path + ": " + std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    error = path + ": not a regular file";
    ok = false;
  } else if ((st.st_mode & 007) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    error = path + ": a secret key open to others (mode " + std::string(mode) +
            "); chmod 600 it";
    ok = false;
  } else if (st.st_size > 4096) {
    error = path + ": too big for a ferry PSK";
    ok = false;
  }
  while (ok) {
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      error = path + ": " + std::strerror(errno);
      ok = false;
    }
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  if (ok && !parse_psk(text, bytes, error)) {
    error = path + ": " + error;
    ok = false;
  }
  OPENSSL_cleanse(text.data(), text.size());
  return ok;
}

std::string psk_identity(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md, &n, EVP_sha256(), nullptr) !=
      1) {
    return {};
  }
  return "ferry-psk:" + hex_of(md, 8);
}

// ---- Certificates ---------------------------------------------------------

bool generate_identity(std::string_view name, PeerIdentity& out,
                       std::string& error) {
  // Key.
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) {
    error = "cannot make an Ed25519 key: " + openssl_reason();
    return false;
  }

  // Self-signed certificate: the fingerprint is what is trusted, so the
  // fields only need to be valid, not meaningful.
  X509Ptr x(X509_new());
  unsigned char serial[16];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;  // a positive INTEGER
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  bool ok = x && bn && X509_set_version(x.get(), 2) == 1 &&
            BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get())) &&
            X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) &&
            X509_time_adj_ex(X509_getm_notAfter(x.get()), 36500, 0, nullptr) &&
            X509_set_pubkey(x.get(), key.get()) == 1;
  BN_free(bn);
  if (ok) {
    X509_NAME* subject = X509_get_subject_name(x.get());
    std::string cn(name.empty() ? std::string_view("ferry") : name);
    ok = X509_NAME_add_entry_by_txt(
             subject, "CN", MBSTRING_UTF8,
             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
             0) == 1 &&
         X509_set_issuer_name(x.get(), subject) == 1 &&
         X509_sign(x.get(), key.get(), nullptr) > 0;  // Ed25519: no digest
  }
  if (!ok) {
    error = "cannot make a certificate: " + openssl_reason();
    return false;
  }

  // PEM.
  BioPtr kb(BIO_new(BIO_s_mem())), cb(BIO_new(BIO_s_mem()));
  if (!kb || !cb ||
      PEM_write_bio_PrivateKey(kb.get(), key.get(), nullptr, nullptr, 0,
                               nullptr, nullptr) != 1 ||
      PEM_write_bio_X509(cb.get(), x.get()) != 1) {
    error = "cannot write PEM: " + openssl_reason();
    return false;
  }
  out.key_pem = bio_text(kb.get());
  out.cert_pem = bio_text(cb.get());
  return true;
}

std::string cert_fingerprint(std::string_view cert_pem) {
  BioPtr b = mem_bio(cert_pem);
  X509Ptr x(b ? PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)
              : nullptr);
  ERR_clear_error();
  return x ? fingerprint_of(x.get()) : std::string();
}

std::string normalize_fingerprint(std::string_view text) {
  if (text.size() > 7 &&
      (text.substr(0, 7) == "sha256:" || text.substr(0, 7) == "SHA256:")) {
    text.remove_prefix(7);
  }
  std::string hex;
  for (char c : text) {
    if (c == ':') continue;
    if (!std::isxdigit(static_cast<unsigned char>(c))) return {};
    hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (hex.size() != 64) return {};
  return "sha256:" + hex;
}

std::unique_ptr<PeerTls> PeerTls::make(const PeerIdentity& me,
                                       std::vector<PinnedPeer> pins,
                                       bool server, std::string& error) {
  namespace ssl = boost::asio::ssl;
  std::unique_ptr<PeerTls> t(new PeerTls(server ? ssl::context::tls_server
                                                : ssl::context::tls_client));
  SSL_CTX* ctx = t->ctx_.native_handle();

  // The pins.
  bool any_psk = false;
  for (PinnedPeer& p : pins) {
    if (p.fingerprint.empty() && p.psk.empty()) {
      error = "peer " + p.name + ": neither a fingerprint nor a PSK";
      return nullptr;
    }
    if (!p.fingerprint.empty()) {
      std::string fp = normalize_fingerprint(p.fingerprint);
      if (fp.empty()) {
        error = "peer " + p.name + ": malformed fingerprint '" + p.fingerprint +
                "'";
        return nullptr;
      }
      p.fingerprint = fp;
    }
    if (!p.psk.empty() && p.psk.size() != kPskBytes) {
      error = "peer " + p.name + ": a PSK must be " +
              std::to_string(kPskBytes) + " bytes, not " +
              std::to_string(p.psk.size());
      return nullptr;
    }
    t->identities_.push_back(p.psk.empty() ? std::string()
                                           : psk_identity(p.psk));
    any_psk = any_psk || !p.psk.empty();
  }
  t->pins_ = std::move(pins);
  t->me_ = me;
  t->server_ = server;

  // Our identity, if we have one.
  if (!me.key_pem.empty() || !me.cert_pem.empty()) {
    BioPtr kb = mem_bio(me.key_pem), cb = mem_bio(me.cert_pem);
    PkeyPtr key(
        kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr)
           : nullptr);
    X509Ptr cert(cb ? PEM_read_bio_X509(cb.get(), nullptr, nullptr, nullptr)
                    : nullptr);
    if (!key || !cert) {
      error = "cannot read our TLS key or certificate: " + openssl_reason();
      return nullptr;
    }
    if (SSL_CTX_use_certificate(ctx, cert.get()) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key.get()) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
      error = "our TLS key does not fit our certificate: " + openssl_reason();
      return nullptr;
    }
  }

  // TLS 1.3 only, mutual authentication by pinned fingerprint or PSK, and
  // no tickets (bytes on a modem line that no later call uses).
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  if (SSL_CTX_set_ciphersuites(ctx, kSuites) != 1) {
    error = "cannot set the TLS 1.3 cipher suites: " + openssl_reason();
    return nullptr;
  }
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(ctx,
                     server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                            : SSL_VERIFY_PEER,
                     nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, &PeerTls::verify, t.get());
  if (SSL_CTX_set_session_id_context(ctx, kSidContext,
                                     sizeof kSidContext - 1) != 1) {
    error = "cannot set the TLS session context: " + openssl_reason();
    return nullptr;
  }
  if (any_psk) {
    SSL_CTX_set_ex_data(ctx, owner_index(), t.get());
    if (server) {
      SSL_CTX_set_psk_find_session_callback(ctx, &PeerTls::find_psk);
    } else {
      SSL_CTX_set_psk_use_session_callback(ctx, &PeerTls::use_psk);
    }
  }
  return t;
}

std::unique_ptr<PeerTls> PeerTls::for_peer(std::string_view peer,
                                           std::string& error) const {
  for (const PinnedPeer& p : pins_) {
    if (p.name == peer) return make(me_, {p}, false, error);
  }
  error = "peer " + std::string(peer) + " is not pinned";
  return nullptr;
}

// A TLS 1.3 session that carries an external PSK: the key as the
// "master key", a SHA-256 suite, no early data.
SSL_SESSION* PeerTls::psk_session(SSL* ssl, const PinnedPeer& p) {
  static const unsigned char kAes128GcmSha256[2] = {0x13, 0x01};
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, kAes128GcmSha256);
  SSL_SESSION* s = cipher ? SSL_SESSION_new() : nullptr;
  if (s == nullptr) return nullptr;
  if (SSL_SESSION_set1_master_key(
          s, reinterpret_cast<const unsigned char*>(p.psk.data()),
          p.psk.size()) != 1 ||
      SSL_SESSION_set_cipher(s, cipher) != 1 ||
      SSL_SESSION_set1_id_context(s, kSidContext, sizeof kSidContext - 1) !=
          1 ||
      SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION) != 1) {
    SSL_SESSION_free(s);
    return nullptr;
  }
  return s;
}

const PinnedPeer* PeerTls::psk_pin(std::string_view identity) const {
  for (size_t i = 0; i < pins_.size(); ++i) {
    if (!identities_[i].empty() && identities_[i] == identity) {
      return &pins_[i];
    }
  }
  return nullptr;
}

// Calling side: offer the first pinned PSK.  Returning 1 with no session
// means "no PSK", and the handshake goes on with certificates.
int PeerTls::use_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id,
                     size_t* id_len, SSL_SESSION** session) {
  *session = nullptr;
  const auto* self = static_cast<const PeerTls*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), owner_index()));
  if (self == nullptr) return 1;
  // After a HelloRetryRequest OpenSSL asks again with the suite's hash;
  // both our suites use SHA-256, so anything else gets no PSK.
  if (md != nullptr && EVP_MD_get_type(md) != NID_sha256) return 1;
  for (size_t i = 0; i < self->pins_.size(); ++i) {
    if (self->identities_[i].empty()) continue;
    SSL_SESSION* s = psk_session(ssl, self->pins_[i]);
    if (s == nullptr) return 0;
    *id = reinterpret_cast<const unsigned char*>(self->identities_[i].data());
    *id_len = self->identities_[i].size();
    *session = s;
    SSL_set_ex_data(ssl, pin_index(), const_cast<PinnedPeer*>(&self->pins_[i]));
    return 1;
  }
  return 1;
}

// Answering side: the identity names the peer.  An unknown identity is
// "no PSK" (certificates may still follow); a known identity with the
// wrong key fails OpenSSL's binder check and ends the handshake.
int PeerTls::find_psk(SSL* ssl, const unsigned char* id, size_t id_len,
                      SSL_SESSION** session) {
  *session = nullptr;
  const auto* self = static_cast<const PeerTls*>(
      SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), owner_index()));
  if (self == nullptr) return 1;
  const PinnedPeer* p = self->psk_pin(
      std::string_view(reinterpret_cast<const char*>(id), id_len));
  if (p == nullptr) return 1;
  SSL_SESSION* s = psk_session(ssl, *p);
  if (s == nullptr) return 0;
  *session = s;
  SSL_set_ex_data(ssl, pin_index(), const_cast<PinnedPeer*>(p));
  return 1;
}

// Replaces OpenSSL's chain building: the leaf's fingerprint must be pinned.
int PeerTls::verify(X509_STORE_CTX* store, void* arg) {
  const auto* self = static_cast<const PeerTls*>(arg);
  X509* leaf = X509_STORE_CTX_get0_cert(store);
  std::string fp = leaf ? fingerprint_of(leaf) : std::string();
  for (const PinnedPeer& p : self->pins_) {
    if (!fp.empty() && p.fingerprint == fp) return 1;
  }
  X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
  return 0;
}

std::string PeerTls::peer_of(const SSL* ssl) const {
  if (ssl == nullptr) return {};

  // A PSK handshake counts as a resumption in OpenSSL's books.
  if (SSL_session_reused(const_cast<SSL*>(ssl)) == 1) {
    const auto* p =
        static_cast<const PinnedPeer*>(SSL_get_ex_data(ssl, pin_index()));
    for (const PinnedPeer& q : pins_) {
      if (p == &q) return q.name;
    }
    return {};
  }

  X509* x = SSL_get0_peer_certificate(ssl);
  if (x == nullptr) return {};
  std::string fp = fingerprint_of(x);
  for (const PinnedPeer& p : pins_) {
    if (!p.fingerprint.empty() && p.fingerprint == fp) return p.name;
  }
  return {};
}

}  // namespace ferry::gw
