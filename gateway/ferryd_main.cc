// ferryd - the ferry mail gateway daemon.
//
// SYNOPSIS
//   ferryd [--config FILE]            run in the foreground, log to stderr
//   ferryd --check-config [--config FILE]
//   ferryd --version | --help
//
// DESCRIPTION
//   Reads the configuration, the users and aliases files, opens the spool
//   and serves SMTP on every [listener NAME] until SIGTERM or SIGINT, then
//   stops gracefully (listeners closed, sessions told 421, messages being
//   stored finished) and exits 0.  The manual is man/ferryd.8.
//
// EXIT STATUS
//   0 normal stop or valid configuration; 1 configuration or start-up
//   error (the message names file:line or the object and cause); 2 bad
//   command line.
#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <boost/program_options.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

#include "gateway/clock.h"
#include "gateway/config.h"
#include "gateway/files.h"
#include "gateway/peer_tls.h"
#include "gateway/log.h"
#include "gateway/notify.h"
#include "gateway/policy.h"
#include "gateway/privdrop.h"
#include "gateway/router.h"
#include "gateway/server.h"
#include "gateway/users.h"
#include "queue/spool.h"

#ifndef FERRY_VERSION
#define FERRY_VERSION "unknown"
#endif

namespace po = boost::program_options;

namespace {

constexpr const char* kDefaultConfig = "/etc/ferry/ferry.conf";

// Started as root with [ferryd] user set: the spool files root just
// opened or created, and the control socket it bound, must belong to the
// user ferryd becomes, or the next start as that user cannot open them.
void hand_over(const ferry::gw::Config& cfg, const std::string& user) {
  struct passwd* pw = ::getpwnam(user.c_str());
  if (pw == nullptr) return;  // drop_privileges() reports it
  std::error_code ec;
  auto give = [&](const std::filesystem::path& p) {
    if (::lchown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0)
      ferry::log::line("ferryd", "warning: chown " + p.string() + ": " +
                                     std::strerror(errno));
  };
  give(cfg.spool_dir);
  for (auto it = std::filesystem::recursive_directory_iterator(
           cfg.spool_dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    give(it->path());
  }
  struct stat st {};
  if (::lstat(cfg.control_socket.c_str(), &st) == 0 && st.st_uid == 0)
    give(cfg.control_socket);
}

// --check-config: what ferryd would refuse at start-up beyond a file's
// presence -- certificates and keys that do not parse or do not match,
// PSK files that are malformed or open to others, empty paths.
bool check_contents(const ferry::gw::Config& cfg, std::string& error) {
  if (cfg.spool_dir.empty()) {
    error = ferry::gw::config_where(cfg, "[ferryd]", "spool") +
            "expected a directory, got ''";
    return false;
  }
  if (cfg.control_socket.empty() || cfg.control_socket.size() >= 108) {
    error = ferry::gw::config_where(cfg, "[ferryd]", "control_socket") +
            "expected a path of 1 to 107 bytes, got '" + cfg.control_socket +
            "'";
    return false;
  }
  if (!cfg.tls.certificate.empty()) {
    try {
      boost::asio::ssl::context ctx(boost::asio::ssl::context::tls_server);
      ctx.use_certificate_chain_file(cfg.tls.certificate);
      ctx.use_private_key_file(cfg.tls.key, boost::asio::ssl::context::pem);
      if (SSL_CTX_check_private_key(ctx.native_handle()) != 1)
        throw std::runtime_error("the key does not match the certificate");
    } catch (const std::exception& e) {
      error = ferry::gw::config_where(cfg, "[tls]", "certificate") +
              cfg.tls.certificate + " with key " + cfg.tls.key + ": " +
              e.what();
      return false;
    }
  }
  if (!cfg.link.certificate.empty()) {
    ferry::gw::PeerIdentity me;
    std::string why;
    if (!ferry::gw::read_text_file(cfg.link.certificate, me.cert_pem, why) ||
        !ferry::gw::read_text_file(cfg.link.key, me.key_pem, why) ||
        !ferry::gw::PeerTls::make(me, {}, false, why)) {
      error = ferry::gw::config_where(cfg, "[link]", "certificate") +
              cfg.link.certificate + " with key " + cfg.link.key + ": " + why;
      return false;
    }
  }
  for (const auto& p : cfg.peers) {
    if (p.psk_file.empty()) continue;
    std::string psk, why;
    if (!ferry::gw::load_psk_file(p.psk_file, psk, why)) {
      error = ferry::gw::config_where(cfg, "[peer " + p.name + "]",
                                      "psk_file") +
              why;
      return false;
    }
  }
  return true;
}

int fatal(const std::string& what) {
  ferry::log::line("ferryd", "fatal: " + what);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::log::set_program("ferryd");

  po::options_description opts("Options");
  // clang-format off
  opts.add_options()
      ("config,c", po::value<std::string>()->default_value(kDefaultConfig),
       "configuration file")
      ("check-config",
       "validate the configuration, print the effective settings and exit")
      ("clock-scale", po::value<double>(),
       "testing: the scheduler's clock runs this many times faster")
      ("version", "print the version and exit")
      ("help,h", "print this help and exit");
  // clang-format on
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, opts), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::fprintf(stderr, "ferryd: %s\n(try ferryd --help)\n", e.what());
    return 2;
  }
  if (vm.count("help")) {
    std::cout << "Usage: ferryd [--config FILE] [--check-config]\n"
                 "The ferry store-and-forward mail gateway daemon; runs in "
                 "the foreground\nand logs to standard error.\n\n"
              << opts;
    return 0;
  }
  if (vm.count("version")) {
    std::cout << "ferryd " << FERRY_VERSION << "\n";
    return 0;
  }

  // Configuration.
  std::string path = vm["config"].as<std::string>();
  ferry::gw::Config cfg;
  std::string error;
  if (!ferry::gw::load_config(path, cfg, error)) {
    if (vm.count("check-config")) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    return fatal(error);
  }
  auto users = ferry::gw::Users::load(cfg.local.users_file,
                                      cfg.local.aliases_file, error);
  if (!users) {
    // Name the setting that led there.
    bool aliases = !cfg.local.aliases_file.empty() &&
                   error.rfind(cfg.local.aliases_file, 0) == 0;
    error = ferry::gw::config_where(cfg, "[local]",
                                    aliases ? "aliases_file" : "users_file") +
            error;
    if (vm.count("check-config")) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    return fatal(error);
  }
  // RFC 5321 4.5.1: postmaster must reach someone.  Without an alias the
  // mail is kept in mail_root/postmaster (see Policy::check_rcpt).
  std::string postmaster_note;
  if (!cfg.local.domains.empty() && users->expand("postmaster").empty()) {
    postmaster_note = "warning: no alias or user names postmaster; mail "
                      "for postmaster goes to " +
                      cfg.local.mail_root +
                      "/postmaster (add 'postmaster: USER' to the aliases "
                      "file)";
  }
  if (vm.count("check-config")) {
    // The files the settings name must be there and readable.
    if (!ferry::gw::check_files(cfg, error) ||
        !check_contents(cfg, error)) {
      std::fprintf(stderr, "%s\n", error.c_str());
      return 1;
    }
    if (!postmaster_note.empty())
      std::fprintf(stderr, "%s\n", postmaster_note.c_str());
    std::cout << ferry::gw::describe_effective(cfg);
    return 0;
  }
  if (!postmaster_note.empty()) ferry::log::line("ferryd", postmaster_note);

  // The spool, then the service.  The server goes first on the way out:
  // its sessions may still be waiting for the spool's committer.
  // One ferryd per spool: a second one would recover the first one's
  // calls in flight and send their mail twice.  (ferry-sendmail writes
  // to the spool too, but never calls.)  The lock lives while we run.
  std::string lock_path = cfg.spool_dir + "/ferryd.pid";
  int lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (lock_fd < 0)
    return fatal("spool " + cfg.spool_dir + ": " + lock_path + ": " +
                 std::strerror(errno));
  if (::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    char other[32] = {};
    ssize_t n = ::pread(lock_fd, other, sizeof other - 1, 0);
    std::string pid = n > 0 ? std::string(other, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' '))
      pid.pop_back();
    return fatal("spool " + cfg.spool_dir +
                 " is in use by another ferryd" +
                 (pid.empty() ? std::string() : " (pid " + pid + ")") +
                 "; stop it first or give this one its own [ferryd] spool");
  }
  {
    std::string me = std::to_string(::getpid()) + "\n";
    if (::ftruncate(lock_fd, 0) != 0 ||
        ::pwrite(lock_fd, me.data(), me.size(), 0) < 0) {
      ferry::log::line("ferryd", "warning: cannot write " + lock_path);
    }
  }

  std::error_code ec;
  // The spool's own lines ("QID: ... status=queued") in ferryd's log
  // format, so one grep of a queue id reads with times throughout.
  ferry::queue::Options spool_opts;
  spool_opts.log_sink = [](std::string_view l) {
    size_t colon = l.find(": ");
    if (colon == std::string_view::npos) {
      ferry::log::line("spool", l);
    } else {
      ferry::log::line(l.substr(0, colon), l.substr(colon + 2));
    }
  };
  auto spool = ferry::queue::Spool::open(cfg.spool_dir, spool_opts, ec);
  if (!spool) return fatal("spool " + cfg.spool_dir + ": " + ec.message());
  // A crash mid-call leaves recipients in flight: they are due again now.
  size_t requeued = 0;
  if (auto rq = spool->requeue_in_flight(ferry::queue::Clock::now(), requeued))
    return fatal("spool " + cfg.spool_dir + ": " + rq.message());
  if (requeued > 0)
    ferry::log::line("ferryd", "requeued in_flight=" + std::to_string(requeued));

  std::signal(SIGPIPE, SIG_IGN);

  // Routes: local domains, the peers' domains, and everything else to the
  // smarthost peer (or the "smarthost" route, where mail waits until one
  // is configured).
  ferry::gw::RouterConfig rc_cfg;
  rc_cfg.local_domains = cfg.local.domains;
  rc_cfg.smarthost = true;
  for (const auto& p : cfg.peers) {
    rc_cfg.peers.push_back({p.name, p.domains, p.preference});
    if (p.smarthost) rc_cfg.smarthost_route = p.name;
  }
  ferry::gw::ConfigRouter router(rc_cfg);
  ferry::gw::Policy policy(cfg, *users);
  policy.set_router(&router);

  // The scheduler's clock: the system's, or sped up for tests.
  std::unique_ptr<ferry::gw::ScaledClock> scaled;
  const ferry::gw::Clock* clock = &ferry::gw::SystemClock::instance();
  if (vm.count("clock-scale")) {
    double f = vm["clock-scale"].as<double>();
    if (!(f > 0 && f <= 1e6)) {
      std::fprintf(stderr, "ferryd: --clock-scale must be above 0\n");
      return 2;
    }
    scaled = std::make_unique<ferry::gw::ScaledClock>(
        ferry::gw::SysClock::now(), f);
    clock = scaled.get();
  }

  int rc = 0;
  {
    ferry::gw::Server server(cfg, *users, policy, *spool);
    // Delivery status notifications (RFC 3464) from the null sender.
    ferry::gw::NotifierOptions nopts;
    nopts.reporting_mta = cfg.hostname;
    if (nopts.reporting_mta.empty()) {
      char host[256] = {};
      if (::gethostname(host, sizeof host - 1) == 0) nopts.reporting_mta = host;
    }
    nopts.notify = cfg.notify;
    nopts.clock = clock;
    nopts.want_pickup = [&server] { server.want_pickup(); };
    ferry::gw::Notifier notifier(*spool, nopts);
    // Sweeps follow the scheduler's clock: a sped-up test clock sweeps
    // as often in its own time.
    auto every = std::chrono::milliseconds(
        static_cast<int64_t>(60000.0 / (scaled ? vm["clock-scale"].as<double>()
                                               : 1.0)));
    server.enable_notify(notifier, std::max(every,
                                            std::chrono::milliseconds(200)));
    if (!cfg.peers.empty() || !cfg.modems.empty() || !cfg.link.listen.empty()) {
      ferry::gw::CallManagerHooks hooks;
      // The scheduler's memory outlives a restart (sched_state.h); a
      // sped-up clock's times mean nothing to the next run.
      if (!scaled) hooks.state_file = cfg.spool_dir + "/scheduler.json";
      server.enable_calls(router, *clock, std::move(hooks));
    }
    if (!server.start(error)) return fatal(error);
    // Ports are bound and the control socket exists: give up root for
    // good ([ferryd] user; a no-op when started as that user already).
    if (!cfg.user.empty()) {
      if (::geteuid() == 0) hand_over(cfg, cfg.user);
      if (!ferry::gw::drop_privileges(cfg.user, error)) return fatal(error);
      ferry::log::line("ferryd", "running as user=" + cfg.user);
    }
    ferry::log::line("ferryd",
                     "started config=" + ferry::log::quote(path) +
                         " spool=" + ferry::log::quote(cfg.spool_dir));
    rc = server.run();
  }
  spool.reset();
  return rc;
}
