#include "gateway/router.h"

#include <gtest/gtest.h>

namespace ferry::gw {
namespace {

ConfigRouter make(bool smarthost) {
  RouterConfig rc;
  rc.local_domains = {"Here.Example"};
  rc.peers.push_back({"branch", {"branch.example", ".sub.example"}});
  rc.peers.push_back({"backup", {"branch.example"}});
  rc.peers.push_back({"laptop", {"field.example"}});
  rc.smarthost = smarthost;
  return ConfigRouter(rc);
}

TEST(Router, LocalPeersAndSmarthostInOrder) {
  ConfigRouter r = make(true);
  EXPECT_EQ(r.route_for("here.example"), "local");
  EXPECT_EQ(r.route_for("HERE.example"), "local");
  EXPECT_EQ(r.routes_for("branch.example"),
            (std::vector<std::string>{"branch", "backup"}));
  EXPECT_EQ(r.route_for("a.sub.example"), "branch");
  EXPECT_EQ(r.route_for("sub.example"), "smarthost");
  EXPECT_EQ(r.route_for("field.example"), "laptop");
  EXPECT_EQ(r.route_for("elsewhere.org"), "smarthost");
}

TEST(Router, SeveralPeersForOneDomainComeByPreferenceThenConfigOrder) {
  RouterConfig rc;
  rc.local_domains = {"here.example"};
  rc.peers.push_back({"isp", {"elsewhere.org", "branch.example"}, 50});
  rc.peers.push_back({"branch", {"branch.example"}, 10});
  rc.peers.push_back({"relay", {".example"}, 20});
  rc.peers.push_back({"backup", {"branch.example"}, 20});
  rc.smarthost = true;
  rc.smarthost_route = "isp";
  ConfigRouter r(rc);
  EXPECT_EQ(r.routes_for("BRANCH.example"),
            (std::vector<std::string>{"branch", "relay", "backup", "isp"}));
  EXPECT_EQ(r.route_for("branch.example"), "branch");
  // A domain no peer lists goes to the smarthost alone.
  EXPECT_EQ(r.routes_for("other.org"), (std::vector<std::string>{"isp"}));
  // Local stays local, whatever a peer lists.
  EXPECT_EQ(r.routes_for("here.example"),
            (std::vector<std::string>{"local"}));
}

TEST(Router, NoSmarthostMeansNoRoute) {
  ConfigRouter r = make(false);
  EXPECT_EQ(r.route_for("elsewhere.org"), "");
  EXPECT_TRUE(r.routes_for("elsewhere.org").empty());
}

TEST(Router, PeerMayCollectOnlyItsOwnDomains) {
  ConfigRouter r = make(true);
  EXPECT_TRUE(r.peer_serves("laptop", "field.example"));
  EXPECT_TRUE(r.peer_serves("laptop", "FIELD.EXAMPLE"));
  EXPECT_FALSE(r.peer_serves("laptop", "branch.example"));
  EXPECT_FALSE(r.peer_serves("nobody", "field.example"));
  EXPECT_FALSE(r.peer_serves("laptop", "here.example"));
}

}  // namespace
}  // namespace ferry::gw
