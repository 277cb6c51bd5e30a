// ferry-simulate - run the call scheduler over a week of traffic in seconds.
//
// SYNOPSIS
//   ferry-simulate [--trace FILE | --synthetic N] [--seed N] [--verbose]
//                  [--zoneinfo DIR] SIMFILE
//
// DESCRIPTION
//   Reads the simulation file SIMFILE ([simulation], [modem], [schedule],
//   [peer NAME]; see gateway/simulate.h), replays the arrivals of the trace
//   FILE (one "TIME PEER BYTES [PRIORITY]" per line) or of a synthetic
//   trace with N messages per peer per working day, against the real
//   scheduler and a simulated modem, and prints the calls made, connected
//   minutes, failures by class, and each message's wait (median, p95,
//   max).  --verbose prints one line per call first.  Nothing is dialled:
//   no port, socket or file other than the two inputs is touched.
//
// EXIT STATUS
//   0 the simulation ran; 1 a bad simulation file or trace (the message
//   names the line); 2 bad command line.
#include <boost/program_options.hpp>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "gateway/files.h"
#include "gateway/simulate.h"

namespace po = boost::program_options;

int main(int argc, char** argv) {
  po::options_description opts("Options");
  // clang-format off
  opts.add_options()
      ("trace,t", po::value<std::string>(), "arrival trace file")
      ("synthetic,n", po::value<int>(),
       "synthetic trace: N messages per peer per working day")
      ("seed,s", po::value<uint64_t>(), "random seed (overrides the file)")
      ("zoneinfo", po::value<std::string>()->default_value(
           "/usr/share/zoneinfo"), "tz database directory")
      ("verbose,v", "print one line per call")
      ("help,h", "print this help and exit");
  // clang-format on
  po::options_description hidden;
  hidden.add_options()("simfile", po::value<std::string>());
  po::options_description all;
  all.add(opts).add(hidden);
  po::positional_options_description pos;
  pos.add("simfile", 1);

  po::variables_map vm;
  try {
    po::store(
        po::command_line_parser(argc, argv).options(all).positional(pos).run(),
        vm);
    po::notify(vm);
  } catch (const po::error& e) {
    std::cerr << "ferry-simulate: " << e.what() << "\n";
    return 2;
  }
  if (vm.count("help")) {
    std::cout << "usage: ferry-simulate [options] SIMFILE\n" << opts;
    return 0;
  }
  if (!vm.count("simfile") || vm.count("trace") + vm.count("synthetic") != 1) {
    std::cerr << "ferry-simulate: need SIMFILE and one of --trace or "
                 "--synthetic\n";
    return 2;
  }

  // The simulation file.
  std::string path = vm["simfile"].as<std::string>();
  std::string text, error;
  if (!ferry::gw::read_text_file(path, text, error)) {
    std::cerr << "ferry-simulate: " << error << "\n";
    return 1;
  }
  auto cfg = ferry::gw::parse_sim_config(text, error,
                                         vm["zoneinfo"].as<std::string>());
  if (!cfg) {
    std::cerr << "ferry-simulate: " << path << ": " << error << "\n";
    return 1;
  }
  if (vm.count("seed")) cfg->seed = vm["seed"].as<uint64_t>();

  // The trace.
  std::vector<ferry::gw::Arrival> trace;
  if (vm.count("trace")) {
    std::string tpath = vm["trace"].as<std::string>();
    if (!ferry::gw::read_text_file(tpath, text, error)) {
      std::cerr << "ferry-simulate: " << error << "\n";
      return 1;
    }
    auto t = ferry::gw::parse_trace(text, cfg->start, error);
    if (!t) {
      std::cerr << "ferry-simulate: " << tpath << ": " << error << "\n";
      return 1;
    }
    trace = std::move(*t);
  } else {
    int n = vm["synthetic"].as<int>();
    if (n < 0 || n > 100000) {
      std::cerr << "ferry-simulate: --synthetic wants 0..100000\n";
      return 2;
    }
    trace = ferry::gw::synthetic_trace(*cfg, n, cfg->seed);
  }

  ferry::gw::SimReport r = ferry::gw::simulate(*cfg, trace);
  if (vm.count("verbose"))
    for (const std::string& l : r.log) std::cout << l << "\n";
  std::cout << r.summary();
  return 0;
}
