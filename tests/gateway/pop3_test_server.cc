// pop3_test_server: a test-only program that runs ferry's POP3 listener
// (gateway/pop3_server.h) as a real process until ferryd starts it itself.
//
//   pop3_test_server --config FILE [--listen 127.0.0.1:0] [--trusted-local]
//                    [--idle-timeout MS] [--max-sessions N]
//
// From FILE (ferry.conf syntax) it uses [local] mail_root, users_file,
// aliases_file and [tls] certificate/key (STLS is offered when they are
// set).  The POP3 settings come from the command line because ferry.conf
// has no [pop3] section yet.  Once bound it prints one line to standard
// output, "listening HOST:PORT", so a test can use port 0.  SIGTERM or
// SIGINT stops it gracefully; exit status 0 then, 1 on a start-up error,
// 2 on a usage error.  Logs go to standard error as ferryd's do.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/config.h"
#include "gateway/log.h"
#include "gateway/pop3_server.h"
#include "gateway/users.h"

namespace asio = boost::asio;
using namespace ferry::gw;

namespace {

int usage() {
  std::cerr << "usage: pop3_test_server --config FILE [--listen ADDR] "
               "[--trusted-local] [--idle-timeout MS] [--max-sessions N]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  ferry::log::set_program("pop3_test_server");

  // Command line.
  std::string config_path;
  Pop3Options opts;
  opts.address = "127.0.0.1:0";
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    bool has_value = i + 1 < argc;
    if (a == "--config" && has_value) {
      config_path = argv[++i];
    } else if (a == "--listen" && has_value) {
      opts.address = argv[++i];
    } else if (a == "--trusted-local") {
      opts.trusted_local = true;
    } else if (a == "--idle-timeout" && has_value) {
      opts.idle_timeout = std::chrono::milliseconds(std::atol(argv[++i]));
    } else if (a == "--max-sessions" && has_value) {
      opts.max_sessions = static_cast<unsigned>(std::atol(argv[++i]));
    } else {
      return usage();
    }
  }
  if (config_path.empty()) return usage();

  // Configuration, users, TLS.
  Config cfg;
  std::string error;
  if (!load_config(config_path, cfg, error)) {
    std::cerr << "pop3_test_server: " << error << "\n";
    return 1;
  }
  opts.mail_root = cfg.local.mail_root;
  auto users = Users::load(cfg.local.users_file, cfg.local.aliases_file, error);
  if (!users) {
    std::cerr << "pop3_test_server: " << error << "\n";
    return 1;
  }
  std::unique_ptr<asio::ssl::context> tls;
  if (!cfg.tls.certificate.empty()) {
    tls = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    boost::system::error_code ec;
    tls->set_options(
        asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
            asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
            asio::ssl::context::no_tlsv1_1,
        ec);
    if (!ec) tls->use_certificate_chain_file(cfg.tls.certificate, ec);
    if (!ec)
      tls->use_private_key_file(cfg.tls.key, asio::ssl::context::pem, ec);
    if (ec) {
      std::cerr << "pop3_test_server: [tls]: " << ec.message() << "\n";
      return 1;
    }
  }

  // Serve until a signal.
  asio::io_context io(1);
  asio::thread_pool disk(2);
  auto listener = run_pop3_listener(io, opts, *users, tls.get(), &disk, error);
  if (!listener) {
    std::cerr << "pop3_test_server: " << error << "\n";
    return 1;
  }
  auto ep = listener->local_endpoint();
  std::cout << "listening " << ep.address().to_string() << ":" << ep.port()
            << std::endl;

  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&listener](const boost::system::error_code& ec, int) {
    if (!ec) listener->stop();
  });
  io.run();
  disk.join();
  return 0;
}
