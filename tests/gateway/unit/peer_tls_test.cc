#include "gateway/peer_tls.h"

#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/connect_pair.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace ferry::gw {
namespace {

namespace asio = boost::asio;
using Socket = asio::local::stream_protocol::socket;

// What each side of one handshake saw.
struct Shake {
  boost::system::error_code client_ec, server_ec;
  std::string client_saw, server_saw;  // peer_of() after the handshake
  bool client_certless = false;        // no certificate crossed
  bool server_certless = false;
};

// One TLS handshake between `client` and `server` over a socketpair, in
// one io_context.  A side that fails closes its socket, so the other
// never waits for bytes that will not come.
Shake handshake(PeerTls& client, PeerTls& server) {
  asio::io_context io;
  Socket a(io), b(io);
  asio::local::connect_pair(a, b);
  asio::ssl::stream<Socket&> c(a, client.context()), s(b, server.context());
  Shake r;
  c.async_handshake(
      asio::ssl::stream_base::client, [&](const boost::system::error_code& e) {
        r.client_ec = e;
        if (e) {
          a.close();
          return;
        }
        r.client_saw = client.peer_of(c.native_handle());
        r.client_certless =
            SSL_get0_peer_certificate(c.native_handle()) == nullptr;
      });
  s.async_handshake(
      asio::ssl::stream_base::server, [&](const boost::system::error_code& e) {
        r.server_ec = e;
        if (e) {
          b.close();
          return;
        }
        r.server_saw = server.peer_of(s.native_handle());
        r.server_certless =
            SSL_get0_peer_certificate(s.native_handle()) == nullptr;
      });
  io.run_for(std::chrono::seconds(20));
  return r;
}

std::string new_psk() {
  std::string bytes, error;
  EXPECT_TRUE(parse_psk(generate_psk(), bytes, error)) << error;
  return bytes;
}

std::unique_ptr<PeerTls> make_or_fail(const PeerIdentity& me,
                                      std::vector<PinnedPeer> pins,
                                      bool server) {
  std::string error;
  auto t = PeerTls::make(me, std::move(pins), server, error);
  EXPECT_TRUE(t) << error;
  return t;
}

class TempDir {
 public:
  TempDir() {
    std::string t =
        (std::filesystem::temp_directory_path() / "ferry-psk-XXXXXX").string();
    path_ = ::mkdtemp(t.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  // Writes `text` to NAME with `mode`; returns the path.
  std::string file(const std::string& name, const std::string& text,
                   mode_t mode = 0600) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << text;
    ::chmod(p.c_str(), mode);
    return p;
  }

 private:
  std::string path_;
};

TEST(PeerTls, GeneratedIdentityIsSmallEd25519WithStableFingerprint) {
  PeerIdentity id;
  std::string error;
  ASSERT_TRUE(generate_identity("office", id, error)) << error;
  EXPECT_NE(id.key_pem.find("BEGIN PRIVATE KEY"), std::string::npos);
  EXPECT_NE(id.cert_pem.find("BEGIN CERTIFICATE"), std::string::npos);
  // An Ed25519 certificate is small: it costs little on a modem line.
  EXPECT_LT(id.cert_pem.size(), 700u);
  std::string fp = cert_fingerprint(id.cert_pem);
  ASSERT_EQ(fp.size(), 7u + 64u);
  EXPECT_EQ(fp.substr(0, 7), "sha256:");
  EXPECT_EQ(cert_fingerprint(id.cert_pem), fp);

  PeerIdentity other;
  ASSERT_TRUE(generate_identity("office", other, error));
  EXPECT_NE(cert_fingerprint(other.cert_pem), fp);
}

TEST(PeerTls, FingerprintSpellingsNormalise) {
  std::string hex(64, 'a');
  EXPECT_EQ(normalize_fingerprint(hex), "sha256:" + hex);
  EXPECT_EQ(normalize_fingerprint("SHA256:" + std::string(64, 'A')),
            "sha256:" + hex);
  std::string colons;
  for (int i = 0; i < 32; ++i) colons += std::string(i ? ":" : "") + "AA";
  EXPECT_EQ(normalize_fingerprint(colons), "sha256:" + hex);
  EXPECT_EQ(normalize_fingerprint("sha256:abc"), "");
  EXPECT_EQ(normalize_fingerprint(std::string(64, 'g')), "");
  EXPECT_EQ(cert_fingerprint("not a certificate"), "");
}

TEST(PeerTls, ContextsRefuseBadInput) {
  PeerIdentity id;
  std::string error;
  ASSERT_TRUE(generate_identity("x", id, error));
  EXPECT_TRUE(
      PeerTls::make(id, {{"p", cert_fingerprint(id.cert_pem)}}, true, error))
      << error;
  EXPECT_FALSE(PeerTls::make(id, {{"p", "sha256:nothex"}}, true, error));
  EXPECT_NE(error.find("peer p"), std::string::npos) << error;
  PeerIdentity broken{"junk", id.cert_pem};
  EXPECT_FALSE(PeerTls::make(broken, {}, false, error));
  PeerIdentity other;
  ASSERT_TRUE(generate_identity("y", other, error));
  PeerIdentity mismatched{other.key_pem, id.cert_pem};
  EXPECT_FALSE(PeerTls::make(mismatched, {}, false, error));
}

// ---- Pre-shared keys ----------------------------------------------------

TEST(PeerPsk, GeneratedFileParsesToFreshThirtyTwoBytes) {
  std::string text = generate_psk();
  ASSERT_EQ(text.rfind("ferry-psk-v1:", 0), 0u) << text;
  ASSERT_EQ(text.back(), '\n');
  std::string a, b, error;
  ASSERT_TRUE(parse_psk(text, a, error)) << error;
  EXPECT_EQ(a.size(), kPskBytes);
  ASSERT_TRUE(parse_psk(generate_psk(), b, error));
  EXPECT_NE(a, b);
  // CRLF and no newline are the same key.
  std::string line = text.substr(0, text.size() - 1);
  ASSERT_TRUE(parse_psk(line + "\r\n", b, error)) << error;
  EXPECT_EQ(a, b);
  ASSERT_TRUE(parse_psk(line, b, error));
  EXPECT_EQ(a, b);
}

TEST(PeerPsk, MalformedKeysAreRefusedWithTheCause) {
  std::string bytes, error;
  std::string good = generate_psk();
  good.pop_back();
  const std::string bad[] = {
      "",
      "ferry-psk-v2:" + good.substr(13),         // another version
      "ferry-psk-v1:c2hvcnQ=",                   // 5 bytes
      good.substr(0, good.size() - 4) + "!!!=",  // not base64
      good + "AAAA",                             // 35 bytes
      good.substr(0, good.size() - 2) + "B=",    // stray padding bits
      good + "\n" + good,                        // two lines
  };
  for (const std::string& t : bad) {
    error.clear();
    EXPECT_FALSE(parse_psk(t, bytes, error)) << t;
    EXPECT_FALSE(error.empty()) << t;
  }
}

TEST(PeerPsk, IdentityIsDerivedFromTheKeyAlone) {
  std::string k1 = new_psk(), k2 = new_psk();
  std::string id = psk_identity(k1);
  ASSERT_EQ(id.size(), 10u + 16u) << id;
  EXPECT_EQ(id.rfind("ferry-psk:", 0), 0u);
  EXPECT_EQ(psk_identity(k1), id);
  EXPECT_NE(psk_identity(k2), id);
  // SHA-256("") starts e3b0c44298fc1c14: the hash is the plain one.
  EXPECT_EQ(psk_identity(""), "ferry-psk:e3b0c44298fc1c14");
}

TEST(PeerPsk, LoadFileChecksModeAndNamesTheFile) {
  TempDir d;
  std::string text = generate_psk(), want, got, error;
  ASSERT_TRUE(parse_psk(text, want, error));
  std::string ok = d.file("ok.psk", text, 0600);
  ASSERT_TRUE(load_psk_file(ok, got, error)) << error;
  EXPECT_EQ(got, want);
  ASSERT_TRUE(load_psk_file(d.file("g.psk", text, 0640), got, error))
      << error;  // ferryd's group may read it

  std::string open = d.file("open.psk", text, 0644);
  EXPECT_FALSE(load_psk_file(open, got, error));
  EXPECT_EQ(error.rfind(open + ": ", 0), 0u) << error;
  EXPECT_NE(error.find("0644"), std::string::npos) << error;

  std::string junk = d.file("junk.psk", "hello\n");
  EXPECT_FALSE(load_psk_file(junk, got, error));
  EXPECT_EQ(error.rfind(junk + ": not a ferry PSK", 0), 0u) << error;

  EXPECT_FALSE(load_psk_file(ok + ".missing", got, error));
  EXPECT_NE(error.find("No such file"), std::string::npos) << error;
}

TEST(PeerPsk, ContextsRefuseBadPins) {
  PeerIdentity none;
  std::string error;
  EXPECT_FALSE(PeerTls::make(none, {{"p", "", "short"}}, true, error));
  EXPECT_NE(error.find("peer p"), std::string::npos) << error;
  EXPECT_FALSE(PeerTls::make(none, {{"q", ""}}, false, error));
  EXPECT_NE(error.find("neither"), std::string::npos) << error;
  EXPECT_TRUE(PeerTls::make(none, {{"p", "", new_psk()}}, true, error))
      << error;
}

// The common case of a PSK peer: no certificate on either side, and each
// side's peer_of names the other.
TEST(PeerPsk, HandshakeWithoutCertificatesBothWays) {
  PeerIdentity none;
  std::string key = new_psk();
  auto a_client = make_or_fail(none, {{"b", "", key}}, false);
  auto a_server = make_or_fail(none, {{"b", "", key}}, true);
  auto b_client = make_or_fail(none, {{"a", "", key}}, false);
  auto b_server = make_or_fail(none, {{"a", "", key}}, true);

  Shake ab = handshake(*a_client, *b_server);
  ASSERT_FALSE(ab.client_ec)
      << ab.client_ec.message() << " / server: " << ab.server_ec.message();
  ASSERT_FALSE(ab.server_ec) << ab.server_ec.message();
  EXPECT_EQ(ab.client_saw, "b");
  EXPECT_EQ(ab.server_saw, "a");

  Shake ba = handshake(*b_client, *a_server);
  ASSERT_FALSE(ba.client_ec) << ba.client_ec.message();
  ASSERT_FALSE(ba.server_ec) << ba.server_ec.message();
  EXPECT_EQ(ba.client_saw, "a");
  EXPECT_EQ(ba.server_saw, "b");
}

// A peer pinned by both: the PSK is used, and no certificate crosses the
// line (fewer bytes), even though both sides have one.
TEST(PeerPsk, PskPreferredOverCertificateWhenBothPinned) {
  PeerIdentity ida, idb;
  std::string error;
  ASSERT_TRUE(generate_identity("a", ida, error));
  ASSERT_TRUE(generate_identity("b", idb, error));
  std::string key = new_psk();
  auto client =
      make_or_fail(ida, {{"b", cert_fingerprint(idb.cert_pem), key}}, false);
  auto server =
      make_or_fail(idb, {{"a", cert_fingerprint(ida.cert_pem), key}}, true);
  Shake r = handshake(*client, *server);
  ASSERT_FALSE(r.client_ec) << r.client_ec.message();
  ASSERT_FALSE(r.server_ec) << r.server_ec.message();
  EXPECT_EQ(r.client_saw, "b");
  EXPECT_EQ(r.server_saw, "a");
  EXPECT_TRUE(r.client_certless);
  EXPECT_TRUE(r.server_certless);
}

// A stranger with a key of its own: the answerer finds no peer for its
// identity and, having no certificate to fall back on, ends the
// handshake; neither side names a peer.
TEST(PeerPsk, WrongKeyIsRefused) {
  PeerIdentity none;
  auto stranger = make_or_fail(none, {{"b", "", new_psk()}}, false);
  auto server = make_or_fail(none, {{"a", "", new_psk()}}, true);
  Shake r = handshake(*stranger, *server);
  EXPECT_TRUE(r.client_ec);
  EXPECT_TRUE(r.server_ec);
  EXPECT_EQ(r.server_saw, "");
  EXPECT_EQ(r.client_saw, "");
}

// The same when the answerer has a certificate: the stranger may see that
// certificate, but has none pinned to show back, and its PSK fits nobody.
TEST(PeerPsk, WrongKeyIsRefusedByAnAnswererWithACertificate) {
  PeerIdentity ida, idb;
  std::string error;
  ASSERT_TRUE(generate_identity("a", ida, error));
  ASSERT_TRUE(generate_identity("b", idb, error));
  auto stranger =
      make_or_fail(PeerIdentity{},
                   {{"b", cert_fingerprint(idb.cert_pem), new_psk()}}, false);
  auto server = make_or_fail(
      idb, {{"a", cert_fingerprint(ida.cert_pem), new_psk()}}, true);
  Shake r = handshake(*stranger, *server);
  EXPECT_TRUE(r.server_ec);
  EXPECT_EQ(r.server_saw, "");
}

// A key's identity is public (it crosses the line in clear): someone who
// copies b's identity but not its key fails OpenSSL's binder check.
TEST(PeerPsk, StolenIdentityWithoutTheKeyIsRefused) {
  std::string key = new_psk(), forged = new_psk();
  auto server = make_or_fail(PeerIdentity{}, {{"b", "", key}}, true);

  // A raw OpenSSL client that offers b's identity with another key.
  auto client = make_or_fail(PeerIdentity{}, {{"x", "", forged}}, false);
  static std::string stolen;
  stolen = psk_identity(key);
  SSL_CTX_set_psk_use_session_callback(
      client->context().native_handle(),
      [](SSL* ssl, const EVP_MD*, const unsigned char** id, size_t* len,
         SSL_SESSION** sess) -> int {
        static const unsigned char kSuite[2] = {0x13, 0x01};
        SSL_SESSION* s = SSL_SESSION_new();
        unsigned char junk[32] = {1, 2, 3};
        SSL_SESSION_set1_master_key(s, junk, sizeof junk);
        SSL_SESSION_set_cipher(s, SSL_CIPHER_find(ssl, kSuite));
        SSL_SESSION_set_protocol_version(s, TLS1_3_VERSION);
        *id = reinterpret_cast<const unsigned char*>(stolen.data());
        *len = stolen.size();
        *sess = s;
        return 1;
      });
  Shake r = handshake(*client, *server);
  EXPECT_TRUE(r.server_ec);
  EXPECT_TRUE(r.client_ec);
  EXPECT_EQ(r.server_saw, "");
}

// The answerer knows several peers, by PSK and by certificate; each caller
// is named by the key it used.
TEST(PeerPsk, AnswererFindsEachPeerAmongSeveral) {
  PeerIdentity idc, ids;
  std::string error;
  ASSERT_TRUE(generate_identity("certpeer", idc, error));
  ASSERT_TRUE(generate_identity("hq", ids, error));
  std::string k1 = new_psk(), k2 = new_psk(), k3 = new_psk();
  auto server = make_or_fail(ids,
                             {{"one", "", k1},
                              {"certpeer", cert_fingerprint(idc.cert_pem)},
                              {"two", "", k2},
                              {"three", "", k3}},
                             true);
  std::string hq = cert_fingerprint(ids.cert_pem);
  struct Caller {
    std::string name;
    std::unique_ptr<PeerTls> tls;
  };
  std::vector<Caller> callers;
  callers.push_back({"one", make_or_fail({}, {{"hq", "", k1}}, false)});
  callers.push_back({"two", make_or_fail({}, {{"hq", "", k2}}, false)});
  callers.push_back({"three", make_or_fail({}, {{"hq", "", k3}}, false)});
  callers.push_back({"certpeer", make_or_fail(idc, {{"hq", hq}}, false)});
  for (Caller& c : callers) {
    Shake r = handshake(*c.tls, *server);
    ASSERT_FALSE(r.client_ec) << c.name << ": " << r.client_ec.message();
    ASSERT_FALSE(r.server_ec) << c.name << ": " << r.server_ec.message();
    EXPECT_EQ(r.server_saw, c.name);
    EXPECT_EQ(r.client_saw, "hq");
  }
}

// A calling context offers the first PSK it holds; for_peer() makes one
// that offers the called peer's.
TEST(PeerPsk, ForPeerOffersThatPeersKey) {
  std::string k1 = new_psk(), k2 = new_psk();
  auto client = make_or_fail({}, {{"one", "", k1}, {"two", "", k2}}, false);
  auto two = make_or_fail({}, {{"hq", "", k2}}, true);
  Shake first = handshake(*client, *two);
  EXPECT_TRUE(first.server_ec);  // offered "one"'s key to "two"

  std::string error;
  auto to_two = client->for_peer("two", error);
  ASSERT_TRUE(to_two) << error;
  Shake r = handshake(*to_two, *two);
  ASSERT_FALSE(r.client_ec) << r.client_ec.message();
  EXPECT_EQ(r.client_saw, "two");
  EXPECT_EQ(r.server_saw, "hq");
  EXPECT_FALSE(client->for_peer("nobody", error));
  EXPECT_NE(error.find("nobody"), std::string::npos);
}

// Certificates alone still work with the restricted suites.
TEST(PeerPsk, CertificatePinsStillWork) {
  PeerIdentity ida, idb;
  std::string error;
  ASSERT_TRUE(generate_identity("a", ida, error));
  ASSERT_TRUE(generate_identity("b", idb, error));
  auto client =
      make_or_fail(ida, {{"b", cert_fingerprint(idb.cert_pem)}}, false);
  auto server =
      make_or_fail(idb, {{"a", cert_fingerprint(ida.cert_pem)}}, true);
  Shake r = handshake(*client, *server);
  ASSERT_FALSE(r.client_ec) << r.client_ec.message();
  ASSERT_FALSE(r.server_ec) << r.server_ec.message();
  EXPECT_EQ(r.client_saw, "b");
  EXPECT_EQ(r.server_saw, "a");
  EXPECT_FALSE(r.client_certless);
}

}  // namespace
}  // namespace ferry::gw
