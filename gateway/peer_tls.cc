#include "gateway/peer_tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <cctype>

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

std::string fingerprint_of(const X509* x) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (X509_digest(x, EVP_sha256(), md, &n) != 1) return {};
  static const char* hex = "0123456789abcdef";
  std::string out = "sha256:";
  for (unsigned i = 0; i < n; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

}  // namespace

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
  for (PinnedPeer& p : pins) {
    std::string fp = normalize_fingerprint(p.fingerprint);
    if (fp.empty()) {
      error =
          "peer " + p.name + ": malformed fingerprint '" + p.fingerprint + "'";
      return nullptr;
    }
    p.fingerprint = fp;
  }
  t->pins_ = std::move(pins);

  // Our identity.
  BioPtr kb = mem_bio(me.key_pem), cb = mem_bio(me.cert_pem);
  PkeyPtr key(kb ? PEM_read_bio_PrivateKey(kb.get(), nullptr, nullptr, nullptr)
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

  // TLS 1.3 only, mutual authentication by pinned fingerprint, and no
  // tickets (bytes on a modem line that no later call uses).
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_num_tickets(ctx, 0);
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(ctx,
                     server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                            : SSL_VERIFY_PEER,
                     nullptr);
  SSL_CTX_set_cert_verify_callback(ctx, &PeerTls::verify, t.get());
  return t;
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
  X509* x = SSL_get0_peer_certificate(ssl);
  if (x == nullptr) return {};
  std::string fp = fingerprint_of(x);
  for (const PinnedPeer& p : pins_) {
    if (p.fingerprint == fp) return p.name;
  }
  return {};
}

}  // namespace ferry::gw
