// ferry-modemsim: Hayes modem emulator on pseudo-terminals, for tests and
// demonstrations.  See man/ferry-modemsim.1 for the user's contract.
//
// Exit status: 0 after SIGTERM/SIGINT, 1 when set-up fails (a directory,
// a symlink, a socket), 2 for a usage or configuration error: everything
// the command line alone gets wrong is found here, before Sim::Start.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <boost/program_options.hpp>
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "tools/modemsim/sim.h"

namespace po = boost::program_options;
using ferry::modemsim::ModemSpec;
using ferry::modemsim::Options;

namespace {

int g_signal_pipe[2] = {-1, -1};

void OnSignal(int) {
  const char b = 1;
  ssize_t n = write(g_signal_pipe[1], &b, 1);
  (void)n;
}

int Usage(const std::string& why) {
  std::cerr << "ferry-modemsim: " << why << "\n"
            << "usage: ferry-modemsim --dir DIR --modem NAME[:NUMBER] ...\n"
            << "       (ferry-modemsim --help lists every option)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description desc("ferry-modemsim options");
  desc.add_options()
      ("help,h", "show this help")
      ("dir", po::value<std::string>(), "directory for the port symlinks")
      ("modem", po::value<std::vector<std::string>>()->composing(),
       "NAME[:NUMBER], repeatable")
      ("route", po::value<std::vector<std::string>>()->composing(),
       "NUMBER=tcp:ADDR:PORT or NUMBER=exec:CMD, repeatable")
      ("rate", po::value<int>(), "line rate in bit/s (33600)")
      ("latency", po::value<double>(), "one-way latency in ms (0)")
      ("time-scale", po::value<double>(), "speed-up factor (1)")
      ("control", po::value<std::string>(), "admin socket path")
      ("transcripts", po::value<std::string>(), "directory for transcripts")
      ("config", po::value<std::string>(), "configuration file")
      ("profile", po::value<std::string>(), "ec or raw (ec)")
      ("train-ms", po::value<double>(), "handshake time after answer (2000)")
      ("line-limit", po::value<int>(), "command line limit (40)")
      ("hangup", po::value<std::string>(), "vhangup or recreate (vhangup)")
      ("seed", po::value<unsigned long>(), "bit-error generator seed (1)");

  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return Usage(e.what());
  }
  if (vm.count("help")) {
    std::cout << desc;
    return 0;
  }

  // The configuration file first; the command line overrides it.
  Options opts;
  std::string err;
  if (vm.count("config") &&
      !ferry::modemsim::LoadConfig(vm["config"].as<std::string>(), opts,
                                   &err)) {
    return Usage(err);
  }
  if (vm.count("dir")) opts.dir = vm["dir"].as<std::string>();
  if (vm.count("modem")) {
    std::vector<std::string> given;  // names seen on this command line
    for (const auto& m : vm["modem"].as<std::vector<std::string>>()) {
      const auto colon = m.find(':');
      ModemSpec spec;
      spec.name = m.substr(0, colon);
      if (colon != std::string::npos) spec.number = m.substr(colon + 1);
      // The name becomes a file name in --dir (and NAME.ctl beside it):
      // letters, digits, '.', '-', '_', not starting with '.'.
      if (spec.name.empty() || spec.name[0] == '.' ||
          spec.name.find_first_not_of(
              "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
              "0123456789._-") != std::string::npos ||
          spec.number.find_first_not_of("0123456789*#") !=
              std::string::npos) {
        return Usage("bad --modem " + m);
      }
      // Twice on the command line is a mistake: merging would let the
      // second silently change the first.  A [modem NAME] of the
      // configuration file is completed instead, as every option
      // overrides the file.
      if (std::find(given.begin(), given.end(), spec.name) != given.end()) {
        return Usage("--modem " + spec.name + " given twice");
      }
      given.push_back(spec.name);
      bool merged = false;
      for (auto& have : opts.modems) {
        if (have.name == spec.name) {
          if (!spec.number.empty()) have.number = spec.number;
          merged = true;
        }
      }
      if (!merged) opts.modems.push_back(spec);
    }
  }
  if (vm.count("route")) {
    std::vector<std::string> given;  // numbers seen on this command line
    for (const auto& r : vm["route"].as<std::vector<std::string>>()) {
      const auto eq = r.find('=');
      if (eq == std::string::npos || eq == 0) return Usage("bad --route " + r);
      const std::string number = r.substr(0, eq);
      if (std::find(given.begin(), given.end(), number) != given.end()) {
        return Usage("--route " + number + " given twice");
      }
      given.push_back(number);
      opts.routes[number] = r.substr(eq + 1);
    }
  }
  if (vm.count("rate")) opts.rate = vm["rate"].as<int>();
  if (vm.count("latency")) opts.latency_ms = vm["latency"].as<double>();
  if (vm.count("time-scale")) opts.time_scale = vm["time-scale"].as<double>();
  if (vm.count("control")) opts.control = vm["control"].as<std::string>();
  if (vm.count("transcripts")) {
    opts.transcripts = vm["transcripts"].as<std::string>();
  }
  if (vm.count("profile")) {
    const auto p = vm["profile"].as<std::string>();
    if (p != "ec" && p != "raw") return Usage("--profile: ec or raw");
    opts.ec = p == "ec";
  }
  if (vm.count("train-ms")) opts.train_ms = vm["train-ms"].as<double>();
  if (vm.count("line-limit")) opts.line_limit = vm["line-limit"].as<int>();
  if (vm.count("hangup")) {
    const auto h = vm["hangup"].as<std::string>();
    if (h != "vhangup" && h != "recreate") {
      return Usage("--hangup: vhangup or recreate");
    }
    opts.vhangup = h == "vhangup";
  }
  if (vm.count("seed")) opts.seed = vm["seed"].as<unsigned long>();
  if (opts.rate < 300) return Usage("--rate must be at least 300");
  if (!(opts.time_scale > 0)) return Usage("--time-scale must be > 0");
  if (opts.latency_ms < 0 || opts.train_ms < 0) {
    return Usage("--latency and --train-ms must not be negative");
  }
  if (opts.line_limit < 4 || opts.line_limit > 255) {
    return Usage("--line-limit must be 4-255");
  }
  if (opts.dir.empty()) return Usage("--dir is required");
  if (opts.modems.empty()) return Usage("no --modem given");
  for (const auto& [number, target] : opts.routes) {
    std::string why;
    if (!ferry::modemsim::CheckRoute(target, &why)) {
      return Usage("route " + number + ": " + target + ": " + why);
    }
  }
  for (auto& m : opts.modems) {
    for (auto& other : opts.modems) {
      if (&m != &other && !m.number.empty() && m.number == other.number) {
        return Usage("number " + m.number + " used twice");
      }
    }
  }

  // Signals become a byte on a pipe, read by the poll loop.
  if (pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
    std::perror("ferry-modemsim: pipe");
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);

  int rc = 1;
  {
    ferry::modemsim::Sim sim(std::move(opts));
    if (!sim.Start(&err)) {
      std::cerr << "ferry-modemsim: " << err << "\n";
    } else {
      rc = sim.Run(g_signal_pipe[0]);
    }
  }
  return rc;
}
