// TLS between ferry peers: each ferryd has a small self-signed Ed25519
// certificate, and each side pins the other's certificate by its SHA-256
// fingerprint (from the [peer NAME] fingerprint key).  There is no CA and
// no name check: a certificate is trusted exactly when its fingerprint is
// pinned, so a stranger who dials the office number fails the handshake
// and learns nothing beyond our certificate.
//
// TLS 1.3 only, no session tickets (they cost line time and a modem call
// never resumes a session), mutual authentication always.
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

// One pinned peer: its name (from [peer NAME]) and fingerprint.
struct PinnedPeer {
  std::string name;
  std::string fingerprint;  // normalized form
};

class PeerTls {
 public:
  // A context presenting `me` and accepting exactly the certificates in
  // `pins`.  `server` selects the answering side (which also demands a
  // client certificate).  Returns null and sets `error` on a bad key or
  // certificate.
  static std::unique_ptr<PeerTls> make(const PeerIdentity& me,
                                       std::vector<PinnedPeer> pins,
                                       bool server, std::string& error);

  boost::asio::ssl::context& context() { return ctx_; }

  // After a successful handshake on `ssl`: the name of the pinned peer
  // whose certificate the other side presented; empty if none (which the
  // verify callback makes impossible, but callers check anyway).
  std::string peer_of(const SSL* ssl) const;

  PeerTls(const PeerTls&) = delete;
  PeerTls& operator=(const PeerTls&) = delete;

 private:
  explicit PeerTls(boost::asio::ssl::context::method m) : ctx_(m) {}
  static int verify(X509_STORE_CTX* store, void* arg);

  boost::asio::ssl::context ctx_;
  std::vector<PinnedPeer> pins_;
};

}  // namespace ferry::gw
