// TLS between ferry peers.  Two ways for a peer to prove who it is, set
// per [peer NAME] (one or both):
//  - a pinned certificate: each ferryd has a small self-signed Ed25519
//    certificate, and each side pins the other's by its SHA-256
//    fingerprint (the fingerprint key).  There is no CA and no name check:
//    a certificate is trusted exactly when its fingerprint is pinned.
//  - a TLS 1.3 external pre-shared key (the psk_file key): 32 random bytes
//    both offices hold.  The PSK identity sent in the clear is derived from
//    the key (psk_identity()), so the offices need not agree on any name;
//    the answerer finds the peer by that identity.  The key exchange is
//    psk_dhe_ke (ECDHE as well), so a stolen key does not open recorded
//    calls.  A PSK handshake sends no certificates, and needs none: a
//    ferryd whose peers all use PSKs needs no [link] certificate.
// A stranger who dials the office number fails the handshake and learns
// nothing beyond our certificate (if we have one); one with a wrong key
// fails on the PSK binder before any data.
//
// TLS 1.3 only, cipher suites TLS_AES_128_GCM_SHA256 and
// TLS_CHACHA20_POLY1305_SHA256 (both use SHA-256, which the PSK needs), no
// session tickets (they cost line time and a modem call never resumes a
// session), mutual authentication always.
//
// Errors: functions return false / null and set `error` to a sentence
// naming the cause (OpenSSL's reason text included); nothing throws.
// Concurrency: a PeerTls is immutable after make(); its context may be
// used by any number of sessions on any thread (OpenSSL contexts are
// thread-safe for this use).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ferry::gw {

// A private key and its self-signed certificate, both PEM.
struct PeerIdentity {
  std::string key_pem;
  std::string cert_pem;
};

// Makes a new Ed25519 key and a self-signed certificate for `name` (the
// subject CN; informative only), valid for 100 years.
bool generate_identity(std::string_view name, PeerIdentity& out,
                       std::string& error);

// "sha256:" + 64 lower-case hex digits of the certificate's DER encoding;
// empty if `cert_pem` holds no certificate.
std::string cert_fingerprint(std::string_view cert_pem);

// Canonical form of a configured fingerprint: accepts "sha256:HEX" or bare
// HEX, with or without ':' between bytes, any case.  Empty if malformed.
std::string normalize_fingerprint(std::string_view text);

// ---- Pre-shared keys ----------------------------------------------------
//
// A PSK file holds one line, "ferry-psk-v1:" + base64 of 32 bytes (a final
// newline optional).  It must not be readable or writable by others
// (mode 0600 or 0640 with ferryd's group).

constexpr size_t kPskBytes = 32;

// A new PSK file's contents (with its newline), from OpenSSL's RNG; empty
// if the RNG fails.
std::string generate_psk();

// The 32 key bytes of a PSK file's contents; false and `error` (the cause,
// without a file name) if malformed.
bool parse_psk(std::string_view text, std::string& bytes, std::string& error);

// Reads and parses the PSK file at `path`; false and `error` as
// "PATH: REASON" if it cannot be read, is malformed, or is open to others.
bool load_psk_file(const std::string& path, std::string& bytes,
                   std::string& error);

// The identity a PSK is offered under: "ferry-psk:" + the first 16 hex
// digits of SHA-256(key).  Public on the line; says nothing of the key.
std::string psk_identity(std::string_view bytes);

// One pinned peer: its name (from [peer NAME]) and how it authenticates:
// a certificate fingerprint, a PSK, or both (at least one).
struct PinnedPeer {
  std::string name;
  std::string fingerprint;  // normalized form; empty: no certificate
  std::string psk = {};     // kPskBytes raw key bytes; empty: no PSK
};

class PeerTls {
 public:
  // A context presenting `me` and accepting exactly the certificates and
  // PSKs in `pins`.  `server` selects the answering side, which accepts
  // any pinned PSK by its identity, else demands a pinned client
  // certificate.  The calling side offers the PSK of the FIRST pin that
  // has one (a TLS 1.3 client offers one external PSK), else relies on
  // certificates: a call to a PSK peer needs a client context whose first
  // PSK pin is that peer (for_peer()).  `me` may be empty (both PEMs
  // empty): then only PSK handshakes can succeed.  Returns null and sets
  // `error` on a bad key, certificate, fingerprint or PSK length, or a pin
  // with neither.
  static std::unique_ptr<PeerTls> make(const PeerIdentity& me,
                                       std::vector<PinnedPeer> pins,
                                       bool server, std::string& error);

  // A calling-side context for a call to `peer` alone: same identity,
  // only that pin.  Null and `error` if `peer` is not pinned here.
  std::unique_ptr<PeerTls> for_peer(std::string_view peer,
                                    std::string& error) const;

  boost::asio::ssl::context& context() { return ctx_; }

  // After a successful handshake on `ssl`: the name of the pinned peer
  // whose PSK the handshake used, or whose certificate the other side
  // presented; empty if none (which the callbacks make impossible, but
  // callers check anyway).
  std::string peer_of(const SSL* ssl) const;

  PeerTls(const PeerTls&) = delete;
  PeerTls& operator=(const PeerTls&) = delete;

 private:
  explicit PeerTls(boost::asio::ssl::context::method m) : ctx_(m) {}
  static int verify(X509_STORE_CTX* store, void* arg);
  static int use_psk(SSL* ssl, const EVP_MD* md, const unsigned char** id,
                     size_t* id_len, SSL_SESSION** session);
  static int find_psk(SSL* ssl, const unsigned char* id, size_t id_len,
                      SSL_SESSION** session);
  static SSL_SESSION* psk_session(SSL* ssl, const PinnedPeer& p);
  const PinnedPeer* psk_pin(std::string_view identity) const;

  boost::asio::ssl::context ctx_;
  PeerIdentity me_;
  bool server_ = false;
  std::vector<PinnedPeer> pins_;
  std::vector<std::string> identities_;  // psk_identity per pin, or empty
};

}  // namespace ferry::gw
