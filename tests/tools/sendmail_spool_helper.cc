// Test helper for tests/tools/sendmail_test.py: shows what ferry-sendmail
// left in a spool, and runs ferryd's pickup on it (until ferryd wires
// process_pickup in, this is how the script follows a message from the
// command line into a Maildir).
//
//   sendmail_spool_helper dump SPOOL_DIR
//       one JSON object per message and line: id, sender, envid, ret,
//       size, recipients (address, route, state, notify), body (base64)
//   sendmail_spool_helper pickup CONFIG
//       process_pickup() with the config's users, aliases and mail_root;
//       prints the PickupResult as JSON.  Exit 1 on any error.
#include <stdio.h>

#include <memory>
#include <string>
#include <vector>

#include "gateway/config.h"
#include "gateway/pickup.h"
#include "gateway/policy.h"
#include "gateway/smtp_parser.h"
#include "gateway/users.h"
#include "queue/spool.h"

namespace {

namespace queue = ferry::queue;

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

int dump(const std::string& dir) {
  queue::Options o;
  o.read_only = true;
  o.log = false;
  std::error_code ec;
  auto spool = queue::Spool::open(dir, o, ec);
  if (!spool && ec == queue::spool_errc::not_found) return 0;  // never used
  if (!spool) {
    fprintf(stderr, "open %s: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  std::vector<queue::MessageInfo> all;
  if ((ec = spool->list(all))) return 1;
  for (const auto& m : all) {
    std::string body;
    if ((ec = spool->read_body(m.id, body))) return 1;
    std::string line = "{\"id\": " + json_string(m.id) +
                       ", \"sender\": " + json_string(m.sender) +
                       ", \"envid\": " + json_string(m.envid) +
                       ", \"ret\": " + std::to_string(int(m.ret)) +
                       ", \"size\": " + std::to_string(m.size) +
                       ", \"recipients\": [";
    for (size_t i = 0; i < m.recipients.size(); ++i) {
      const auto& r = m.recipients[i];
      line += std::string(i ? ", " : "") +
              "{\"address\": " + json_string(r.address) +
              ", \"route\": " + json_string(r.route) + ", \"state\": " +
              json_string(std::string(queue::to_string(r.state))) +
              ", \"notify\": " + std::to_string(r.notify) + "}";
    }
    line +=
        "], \"body\": " + json_string(ferry::gw::smtp::base64_encode(body)) +
        "}\n";
    fputs(line.c_str(), stdout);
  }
  return 0;
}

int pickup(const std::string& path) {
  ferry::gw::Config cfg;
  std::string error;
  if (!ferry::gw::load_config(path, cfg, error)) {
    fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  auto users = ferry::gw::Users::load(cfg.local.users_file,
                                      cfg.local.aliases_file, error);
  if (!users) {
    fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  ferry::gw::Policy policy(cfg, *users);
  queue::Options o;
  o.log = false;
  std::error_code ec;
  auto spool = queue::Spool::open(cfg.spool_dir, o, ec);
  if (!spool) {
    fprintf(stderr, "open %s: %s\n", cfg.spool_dir.c_str(),
            ec.message().c_str());
    return 1;
  }
  ferry::gw::PickupOptions po;
  po.mail_root = cfg.local.mail_root;
  ferry::gw::PickupResult r;
  if ((ec = ferry::gw::process_pickup(*spool, policy, po, r))) {
    fprintf(stderr, "pickup: %s\n", ec.message().c_str());
    return 1;
  }
  printf(
      "{\"messages\": %zu, \"local\": %zu, \"resubmitted\": %zu, "
      "\"already\": %zu, \"failed\": %zu, \"deferred\": %zu}\n",
      r.messages, r.local, r.resubmitted, r.already, r.failed, r.deferred);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "dump") return dump(argv[2]);
  if (argc == 3 && std::string(argv[1]) == "pickup") return pickup(argv[2]);
  fprintf(stderr, "usage: %s dump SPOOL | pickup CONFIG\n", argv[0]);
  return 2;
}
