#include "gateway/peer_tls.h"

#include <gtest/gtest.h>

namespace ferry::gw {
namespace {

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

}  // namespace
}  // namespace ferry::gw
