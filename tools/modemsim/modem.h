// The Hayes command layer of one emulated modem: command-line assembly, the
// AT command set, result framing, escape detection and the modem's side of
// a call (HAYES.md sections 1-9).
//
// A Modem never touches a file descriptor.  It receives DTE bytes through
// Input(), line events through the On*() calls and time through Tick(); it
// talks back through the Host interface (bytes for the DTE, requests to
// dial, answer, hang up, data for the line).  So the whole AT layer can be
// driven from a test with plain strings.
//
// Concurrency: single-threaded; every call comes from the simulator's poll
// loop.
#ifndef FERRY_TOOLS_MODEMSIM_MODEM_H_
#define FERRY_TOOLS_MODEMSIM_MODEM_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace ferry::modemsim {

using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Duration = Clock::duration;

// Result codes (HAYES §4.1).  DELAYED and BLACKLISTED use the numbers of
// the Rockwell/Conexant tables.
enum class Result {
  kOk = 0,
  kConnect = 1,
  kRing = 2,
  kNoCarrier = 3,
  kError = 4,
  kNoDialtone = 6,
  kBusy = 7,
  kNoAnswer = 8,
  kDelayed = 24,
  kBlacklisted = 32,
};
const char* ResultText(Result r);

// What a dial command asked for, after the dial string was parsed.
struct DialRequest {
  std::string number;     // digits, * # A-D only
  bool wait_tone = false; // W modifier
  bool quiet_answer = false;  // @ modifier
  int pauses = 0;         // commas
  bool stay_command = false;  // trailing ';'
};

// How a connected call looks, for CONNECT and the progress lines.
struct CallInfo {
  int rate = 33600;       // line rate in bit/s (unscaled)
  bool error_corrected = true;
};

enum class State {
  kCommand,      // on-hook, parsing AT lines
  kDialing,      // off-hook, dialing / waiting for carrier
  kAnswering,    // off-hook in answer mode, waiting for carrier
  kOnline,       // transparent data
  kOnlineCommand,  // call held, AT lines parsed
  kOffhookCommand  // off-hook, no carrier
};
const char* StateName(State s);

class Modem {
 public:
  class Host {
   public:
    virtual ~Host() = default;
    // Bytes for the DTE (the PTY).  The host drops them while no program
    // has the port open.
    virtual void ToDte(Modem& m, std::string_view bytes) = 0;
    // Place a call; the host answers later with OnDialResult/OnConnect.
    virtual void Dial(Modem& m, const DialRequest& req) = 0;
    // Answer the call that is ringing us (ATA or S0).
    virtual void Answer(Modem& m) = 0;
    // Go on-hook: the call (or attempt) ends; the far end sees carrier loss.
    virtual void Hangup(Modem& m) = 0;
    // Data typed by the DTE while online, for the line.
    virtual void ToLine(Modem& m, std::string_view bytes) = 0;
    // DCD/DSR/RI may have changed (for the control socket).
    virtual void LinesChanged(Modem& m) = 0;
    // A transcript line for the current call, if any.
    virtual void Note(Modem& m, std::string_view what) = 0;
  };

  struct Profile {
    bool echo = true, quiet = false, verbose = true;
    int x = 4, w = 0, amp_c = 1, amp_d = 2, amp_s = 0;
    std::array<uint8_t, 256> s{};
  };

  Modem(std::string name, Host* host, int line_limit);

  const std::string& name() const { return name_; }
  State state() const { return state_; }
  const Profile& active() const { return p_; }
  int reg(int n) const { return p_.s[n]; }

  // Time scale: every modem duration is divided by it.
  void set_time_scale(double f) { scale_ = f; }
  // Mute: the modem ignores the DTE and says nothing (fault "mute").
  void set_mute(bool m) { mute_ = m; }
  bool mute() const { return mute_; }

  // Bytes from the DTE.
  void Input(std::string_view bytes, TimePoint now);
  // Timers; returns nothing, see NextDeadline().
  void Tick(TimePoint now);
  TimePoint NextDeadline() const;

  // Line events from the host.
  void OnDialResult(Result r);          // the attempt failed with r
  void OnDialOk();                      // ';' dial finished: OK, off-hook
  void OnConnect(const CallInfo& info, TimePoint now);
  void OnRing(TimePoint now);           // one ring burst reached us
  void OnRingingStopped();              // caller gave up before answer
  void OnCarrierLost(TimePoint now);    // far end gone / line dropped
  void OnDtr(bool on, TimePoint now);   // DTE changed DTR (any layer)
  void OnRemoteData(std::string_view bytes);  // line data for the DTE

  // Whether a call is ringing us and not yet answered.
  bool ringing() const { return ringing_; }
  // Whether we will take an incoming call (on-hook, idle).
  bool Idle() const;
  // Whether the DTE is allowed to be read (false throttles the PTY).
  bool dcd() const;
  bool dsr() const { return p_.amp_s == 0 || dcd_carrier_; }
  bool ri() const { return ri_until_ > last_now_; }
  bool dtr() const { return dtr_; }
  // Data held while in online-command state (delivered after ATO).
  size_t held_bytes() const { return held_.size(); }

 private:
  void ExecuteLine(const std::string& body, TimePoint now);
  bool Register(const std::string& b, size_t& i, std::string& info);
  bool Extended(const std::string& b, size_t& i, std::string& info);
  void SendResult(Result r);
  void SendResultText(const std::string& verbose, int code);
  std::string Info(const std::string& text) const;
  void SendConnectLines();
  void GoCommand();
  void HangupLocal();
  void ResetProfile(int n);
  void OnlineInput(std::string_view bytes, TimePoint now);
  Duration Secs(double s) const;

  std::string name_;
  Host* host_;
  size_t line_limit_;
  double scale_ = 1.0;
  bool mute_ = false;

  Profile p_;
  std::array<Profile, 2> stored_;
  Profile factory_;
  int selected_reg_ = 0;

  State state_ = State::kCommand;
  bool ringing_ = false;
  bool dcd_carrier_ = false;
  bool dtr_ = false;
  CallInfo call_;
  std::string held_;

  // Command-line assembly.
  enum class Lex { kIdle, kGotA, kBody };
  Lex lex_ = Lex::kIdle;
  char a_char_ = 0;
  std::string line_;
  size_t line_len_ = 0;     // non-space characters, for the limit
  bool overflow_ = false;
  std::string last_line_;
  bool have_last_ = false;
  bool skip_lf_ = false;    // an LF right after the CR is not an abort

  // Escape detection (HAYES §7).
  TimePoint last_dte_{};
  int plus_count_ = 0;
  TimePoint escape_at_{};   // when the post-guard expires

  // Timers.
  TimePoint answer_deadline_{};  // S7 while answering with nobody there
  TimePoint lost_at_{};          // S10 after carrier loss
  TimePoint ring_reset_at_{};    // S1 cleared after 8 s without RING
  TimePoint ri_until_{};
  TimePoint last_now_{};
  TimePoint dtr_low_since_{};
  bool dtr_pending_ = false;
  bool answer_no_call_ = false;
  DialRequest pending_dial_;      // ';' dialing continues here
  std::string last_number_;
};

}  // namespace ferry::modemsim

#endif  // FERRY_TOOLS_MODEMSIM_MODEM_H_
