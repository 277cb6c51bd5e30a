// ferry-modemsim's simulator: PTYs, the phone network between emulated
// modems, line pacing, faults, control sockets and transcripts.
//
// Sim owns every file descriptor and runs one poll loop (Run()).  Each
// emulated modem is a Port: a PTY published as DIR/NAME, a line-control
// socket DIR/NAME.ctl and a Modem (the AT layer, modem.h).  A Call joins a
// calling Port to a far end (another Port, a TCP connection or a command's
// stdin/stdout) and carries bytes at the line rate.
//
// Concurrency: single-threaded.  Nothing is shared with other threads; the
// only asynchronous input is a signal, turned into a byte on a pipe.
//
// Errors: Setup problems (a directory that does not exist, a symlink in the
// way, a bad route) are reported by Start() as a message and make the
// program exit 1; after Start() nothing is fatal: a failed call is a result
// code for the dialling modem, a broken control client is dropped.
#ifndef FERRY_TOOLS_MODEMSIM_SIM_H_
#define FERRY_TOOLS_MODEMSIM_SIM_H_

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "tools/modemsim/modem.h"

namespace ferry::modemsim {

// Faults of one modem.  They apply to calls it places and calls placed to
// it, except no-dialtone, delayed and blacklisted (calls it places only)
// and mute (the modem itself).
struct Faults {
  bool busy = false;
  bool no_answer = false;
  bool no_dialtone = false;
  bool no_carrier = false;
  bool mute = false;
  bool delayed = false;
  bool blacklisted = false;
  int slow_answer_rings = 0;
  int64_t drop_after_bytes = -1;
  int64_t drop_after_ms = -1;
  double ber = 0;
};

// Applies one fault by name ("busy", "slow-answer 4", ...).  Returns false
// and sets *err for an unknown name or a bad argument.
bool ApplyFault(Faults& f, const std::string& kind, const std::string& arg,
                std::string* err);

struct ModemSpec {
  std::string name;
  std::string number;
  int rate = 0;          // 0: the global rate
  int profile_ec = -1;   // -1: the global profile
  std::string init;      // AT commands run at start (config "init")
  Faults faults;
};

struct Options {
  std::string dir;
  std::vector<ModemSpec> modems;
  std::map<std::string, std::string> routes;  // number -> tcp:.. / exec:..
  int rate = 33600;
  double latency_ms = 0;
  double time_scale = 1.0;
  std::string control;
  std::string transcripts;
  bool ec = true;
  double train_ms = 2000;      // handshake after answer (unscaled)
  int line_limit = 40;         // command characters, spaces not counted
  bool vhangup = true;         // TIOCVHANGUP when privileged
  uint64_t seed = 1;           // bit-error generator
  int delay_after = 0;         // failed calls to a number before DELAYED
  double delay_s = 60;         // how long DELAYED lasts after a failure
  int blacklist_after = 0;     // failed calls before BLACKLISTED
};

// Parses the INI configuration at path into opts (see ferry-modemsim(1),
// CONFIGURATION).  Returns false with *err naming file, line and key.
bool LoadConfig(const std::string& path, Options& opts, std::string* err);

// Whether a route target has one of the forms --route takes (tcp: with a
// literal loopback address and a port, or exec: with a command); if not,
// *why says what is expected.  Checks the text only.
bool CheckRoute(const std::string& target, std::string* why);

struct Call;
struct Port;

class Sim : public Modem::Host {
 public:
  explicit Sim(Options opts);
  ~Sim() override;

  // Creates the PTYs, symlinks and sockets.  False with *err on failure.
  bool Start(std::string* err);
  // Runs until SIGTERM/SIGINT (signal_fd readable) or until the --dir
  // directory disappears; returns the exit code.
  int Run(int signal_fd);

  // Modem::Host
  void ToDte(Modem& m, std::string_view bytes) override;
  void Dial(Modem& m, const DialRequest& req) override;
  void Answer(Modem& m) override;
  void Hangup(Modem& m) override;
  void ToLine(Modem& m, std::string_view bytes) override;
  void LinesChanged(Modem& m) override;
  void Note(Modem& m, std::string_view what) override;

 private:
  Port* PortOf(Modem& m);
  Port* PortByName(const std::string& name);
  bool OpenPty(Port& p, std::string* err);
  void ClosePty(Port& p);
  void WatchPty(Port& p);
  void ReadInotify();
  void PollTermios(Port& p);
  void UpdateDtr(Port& p);
  void SendLines(Port& p, bool force);
  void HangupPty(Port& p);
  void FlushPort(Port& p);
  void ControlLine(Port& p, int fd, const std::string& line);
  std::string AdminCommand(const std::string& line);
  std::string Status();

  void CallTick(Call& c);
  void Pump(Call& c);
  void Deliver(Call& c, int dir, std::string chunk);
  void FailCall(Call& c, Result r, TimePoint at);
  void ConnectCall(Call& c);
  void StartTraining(Call& c);
  void EndCall(Call& c, const std::string& reason, bool notify_caller,
               bool notify_callee);
  bool AnswerFarEnd(Call& c);
  void CallNote(Call& c, const std::string& who, std::string_view what);
  void FlushEndpoint(Call& c);
  size_t SinkBacklog(const Call& c, int d) const;
  TimePoint CallDeadline(const Call& c) const;

  Duration Scaled(double seconds) const;
  TimePoint now() const { return now_; }

  Options opts_;
  std::vector<std::unique_ptr<Port>> ports_;
  std::vector<std::unique_ptr<Call>> calls_;
  int inotify_fd_ = -1;
  int admin_fd_ = -1;
  std::vector<std::pair<int, std::string>> admin_clients_;
  int next_call_id_ = 1;
  TimePoint now_{};
  TimePoint next_termios_poll_{};
  TimePoint next_dir_check_{};
  std::vector<pid_t> children_;
  std::mt19937_64 rng_;
};

}  // namespace ferry::modemsim

#endif  // FERRY_TOOLS_MODEMSIM_SIM_H_
