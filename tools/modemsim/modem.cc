#include "tools/modemsim/modem.h"

#include <algorithm>
#include <cctype>
#include <cstdio>

namespace ferry::modemsim {
namespace {

constexpr size_t kHeldLimit = 16 * 1024;  // HAYES §7: data kept in ATO wait

// Registers this modem has; any other Sn is ERROR (ACC-03).
bool KnownRegister(int n) {
  if (n >= 0 && n <= 12) return true;
  switch (n) {
    case 14: case 16: case 18: case 21: case 22: case 23: case 25: case 27:
    case 30: case 36: case 37: case 38: case 95:
      return true;
    default:
      return false;
  }
}

// Reads a decimal number at b[i]; a missing number is 0 (HAYES §2.2).
// Returns -1 when the digits overflow any register's range.
int Num(const std::string& b, size_t& i) {
  long v = 0;
  while (i < b.size() && std::isdigit(static_cast<unsigned char>(b[i]))) {
    v = v * 10 + (b[i] - '0');
    if (v > 100000) v = 100000;
    ++i;
  }
  return static_cast<int>(v);
}

bool HasDigit(const std::string& b, size_t i) {
  return i < b.size() && std::isdigit(static_cast<unsigned char>(b[i]));
}

// Hayes numeric code of "CONNECT <rate>" (HTR table); 1 when none.
int ConnectCode(int rate) {
  switch (rate) {
    case 1200: return 5;
    case 2400: return 10;
    case 4800: return 11;
    case 9600: return 12;
    case 14400: return 13;
    case 19200: return 14;
    case 7200: return 24;
    case 12000: return 25;
    case 38400: return 28;
    default: return 1;
  }
}

int CarrierCode(int rate) {
  switch (rate) {
    case 300: return 40;
    case 1200: return 46;
    case 2400: return 47;
    case 4800: return 48;
    case 7200: return 49;
    case 9600: return 50;
    case 12000: return 51;
    case 14400: return 52;
    default: return -1;
  }
}

Modem::Profile Factory() {
  Modem::Profile p;
  p.s.fill(0);
  p.s[2] = 43;   // '+'
  p.s[3] = 13;   // CR
  p.s[4] = 10;   // LF
  p.s[5] = 8;    // BS
  p.s[6] = 2;
  p.s[7] = 50;
  p.s[8] = 2;
  p.s[9] = 6;
  p.s[10] = 14;
  p.s[11] = 95;
  p.s[12] = 50;
  p.s[25] = 5;
  return p;
}

}  // namespace

const char* ResultText(Result r) {
  switch (r) {
    case Result::kOk: return "OK";
    case Result::kConnect: return "CONNECT";
    case Result::kRing: return "RING";
    case Result::kNoCarrier: return "NO CARRIER";
    case Result::kError: return "ERROR";
    case Result::kNoDialtone: return "NO DIALTONE";
    case Result::kBusy: return "BUSY";
    case Result::kNoAnswer: return "NO ANSWER";
    case Result::kDelayed: return "DELAYED";
    case Result::kBlacklisted: return "BLACKLISTED";
  }
  return "ERROR";
}

const char* StateName(State s) {
  switch (s) {
    case State::kCommand: return "command";
    case State::kDialing: return "dialing";
    case State::kAnswering: return "answering";
    case State::kOnline: return "online";
    case State::kOnlineCommand: return "online-command";
    case State::kOffhookCommand: return "offhook-command";
  }
  return "?";
}

Modem::Modem(std::string name, Host* host, int line_limit)
    : name_(std::move(name)), host_(host), line_limit_(line_limit) {
  factory_ = Factory();
  p_ = factory_;
  stored_ = {factory_, factory_};
}

Duration Modem::Secs(double s) const {
  return std::chrono::duration_cast<Duration>(
      std::chrono::duration<double>(s / scale_));
}

bool Modem::Idle() const {
  return state_ == State::kCommand && !ringing_ && !mute_;
}

bool Modem::dcd() const { return p_.amp_c == 0 || dcd_carrier_; }

// ---------------------------------------------------------------------------
// Output framing (HAYES §3)

void Modem::SendResultText(const std::string& verbose, int code) {
  if (p_.quiet || mute_) return;
  const char cr = static_cast<char>(p_.s[3]);
  const char lf = static_cast<char>(p_.s[4]);
  std::string out;
  if (p_.verbose) {
    out = std::string{cr, lf} + verbose + std::string{cr, lf};
  } else {
    if (code < 0) return;
    out = std::to_string(code) + cr;
  }
  host_->ToDte(*this, out);
  host_->Note(*this, "result " + verbose);
}

void Modem::SendResult(Result r) {
  SendResultText(ResultText(r), static_cast<int>(r));
}

std::string Modem::Info(const std::string& text) const {
  const char cr = static_cast<char>(p_.s[3]);
  const char lf = static_cast<char>(p_.s[4]);
  if (p_.verbose) return std::string{cr, lf} + text + std::string{cr, lf};
  return text + std::string{cr, lf};
}

void Modem::SendConnectLines() {
  const int s95 = p_.s[95];
  const bool w1 = p_.w == 1;
  const bool ec = call_.error_corrected;
  if (p_.x > 0 && (w1 || (s95 & 4))) {
    SendResultText("CARRIER " + std::to_string(call_.rate),
                   CarrierCode(call_.rate));
  }
  if (p_.x > 0 && (w1 || (s95 & 8))) {
    SendResultText(ec ? "PROTOCOL: LAP-M" : "PROTOCOL: NONE", ec ? 77 : 70);
  }
  if (p_.x > 0 && (s95 & 32)) {
    // No data compression is emulated, so none is claimed.
    SendResultText("COMPRESSION: NONE", 69);
  }
  if (p_.x == 0) {
    SendResultText("CONNECT", 1);
    return;
  }
  std::string text = "CONNECT " + std::to_string(call_.rate);
  if ((s95 & 2) && ec) text += "/ARQ";
  SendResultText(text, ConnectCode(call_.rate));
}

// ---------------------------------------------------------------------------
// DTE input

void Modem::Input(std::string_view bytes, TimePoint now) {
  last_now_ = now;
  if (mute_) return;
  size_t i = 0;
  if (state_ == State::kOnline) {
    OnlineInput(bytes, now);
    return;
  }
  if (state_ == State::kDialing || state_ == State::kAnswering) {
    // HAYES §9.3: any byte aborts the attempt (an LF right after the
    // command's CR is part of the command, not an abort).
    while (i < bytes.size()) {
      char c = bytes[i++];
      if (skip_lf_ && c == static_cast<char>(p_.s[4])) {
        skip_lf_ = false;
        continue;
      }
      skip_lf_ = false;
      host_->Note(*this, "abort by DTE byte");
      HangupLocal();
      SendResult(Result::kNoCarrier);
      break;
    }
    if (i >= bytes.size()) return;
  }
  for (; i < bytes.size(); ++i) {
    const char c = static_cast<char>(bytes[i] & 0x7f);
    skip_lf_ = false;
    if (p_.echo) host_->ToDte(*this, std::string_view(&c, 1));
    switch (lex_) {
      case Lex::kIdle:
        if (c == 'A' || c == 'a') {
          lex_ = Lex::kGotA;
          a_char_ = c;
        }
        break;
      case Lex::kGotA:
        if ((c == 'T' && a_char_ == 'A') || (c == 't' && a_char_ == 'a')) {
          lex_ = Lex::kBody;
          line_.clear();
          line_len_ = 0;
          overflow_ = false;
        } else if (c == '/') {
          lex_ = Lex::kIdle;
          ExecuteLine(have_last_ ? last_line_ : std::string(), now);
          if (state_ != State::kCommand &&
              state_ != State::kOnlineCommand &&
              state_ != State::kOffhookCommand) {
            // A dial or answer started: the rest is abort material.
            Input(bytes.substr(i + 1), now);
            return;
          }
        } else if (c == 'A' || c == 'a') {
          a_char_ = c;
        } else {
          lex_ = Lex::kIdle;
        }
        break;
      case Lex::kBody:
        if (c == static_cast<char>(p_.s[3])) {
          lex_ = Lex::kIdle;
          skip_lf_ = true;
          if (overflow_) {
            host_->Note(*this, "command too long");
            SendResult(Result::kError);
            break;
          }
          last_line_ = line_;
          have_last_ = true;
          ExecuteLine(line_, now);
          if (state_ == State::kDialing || state_ == State::kAnswering ||
              state_ == State::kOnline) {
            // Bytes after the command line belong to the new state.
            skip_lf_ = state_ != State::kOnline;
            Input(bytes.substr(i + 1), now);
            return;
          }
          skip_lf_ = true;
        } else if (p_.s[5] < 128 && c == static_cast<char>(p_.s[5])) {
          if (!line_.empty()) {
            if (line_.back() != ' ') --line_len_;
            line_.pop_back();
          }
          if (p_.echo) host_->ToDte(*this, " \b");
        } else if (static_cast<unsigned char>(c) >= 32) {
          if (c != ' ') ++line_len_;
          if (line_len_ > line_limit_) {
            overflow_ = true;
          } else {
            line_ += c;
          }
        }
        break;
    }
  }
}

void Modem::OnlineInput(std::string_view bytes, TimePoint now) {
  const bool enabled = p_.s[2] <= 127 && p_.s[12] > 0;
  const Duration guard = Secs(p_.s[12] * 0.02);
  for (char c : bytes) {
    const Duration gap = now - last_dte_;
    if (enabled && c == static_cast<char>(p_.s[2])) {
      if (plus_count_ == 0 || plus_count_ == 3) {
        plus_count_ = (plus_count_ == 0 && gap >= guard) ? 1 : 0;
      } else if (gap < guard) {
        ++plus_count_;
      } else {
        plus_count_ = 1;
      }
    } else {
      plus_count_ = 0;
    }
    last_dte_ = now;
    if (plus_count_ == 3) escape_at_ = now + guard;
  }
  // The modem cannot know in advance: the escape characters are data too.
  host_->ToLine(*this, bytes);
}

// ---------------------------------------------------------------------------
// Command execution (HAYES §2.4, §5)

namespace {
enum class Action { kNone, kDial, kAnswer, kOnline, kReset };
}

void Modem::ExecuteLine(const std::string& body, TimePoint now) {
  host_->Note(*this, "command AT" + body);
  std::string info;

  // Parse and run the plain commands; the one that ends the line (D, A, O,
  // Z) is only recorded, so its result follows any information text.
  Action action = Action::kNone;
  int arg = 0;
  DialRequest dial;
  size_t i = 0;
  bool ok = true;
  while (ok && i < body.size() && action == Action::kNone) {
    const char c = static_cast<char>(
        std::toupper(static_cast<unsigned char>(body[i])));
    if (c == ' ' || static_cast<unsigned char>(c) < 32) {
      ++i;
      continue;
    }
    ++i;
    switch (c) {
      case 'A':
        action = Action::kAnswer;
        break;
      case 'D': {
        action = Action::kDial;
        bool first = true;
        for (; i < body.size(); ++i) {
          char d = static_cast<char>(
              std::toupper(static_cast<unsigned char>(body[i])));
          if (std::isdigit(static_cast<unsigned char>(d)) || d == '*' ||
              d == '#' || (d >= 'A' && d <= 'D')) {
            dial.number += d;
          } else if (d == 'W') {
            dial.wait_tone = true;
          } else if (d == '@') {
            dial.quiet_answer = true;
          } else if (d == ',') {
            ++dial.pauses;
          } else if (d == ';') {
            dial.stay_command = true;
            break;
          } else if (d == 'L' && first) {
            dial.number = last_number_;
          } else if (d == 'S' && i + 1 < body.size() && body[i + 1] == '=') {
            ++i;  // stored numbers are not emulated; skip the index
            while (HasDigit(body, i + 1)) ++i;
          }
          if (d != ' ') first = false;
        }
        i = body.size();
        break;
      }
      case 'Z': {
        arg = Num(body, i);
        if (arg > 1) ok = false;
        action = Action::kReset;
        break;
      }
      case 'O': {
        arg = Num(body, i);
        if (arg > 1) ok = false;
        action = Action::kOnline;
        break;
      }
      case 'E': case 'Q': case 'V': {
        int n = Num(body, i);
        if (n > 1) {
          ok = false;
          break;
        }
        (c == 'E' ? p_.echo : c == 'Q' ? p_.quiet : p_.verbose) = n == 1;
        break;
      }
      case 'X': {
        int n = Num(body, i);
        if (n > 7) ok = false;
        else p_.x = std::min(n, 4);  // X5-X7 behave as X4 [choice]
        break;
      }
      case 'W': {
        int n = Num(body, i);
        if (n > 2) ok = false;
        else p_.w = n;
        break;
      }
      case 'H': {
        int n = Num(body, i);
        if (n > 1) {
          ok = false;
        } else if (n == 0) {
          if (state_ != State::kCommand) HangupLocal();
        } else if (state_ == State::kCommand) {
          state_ = State::kOffhookCommand;
          host_->Note(*this, "off-hook");
        }
        break;
      }
      case 'I': {
        int n = Num(body, i);
        if (n > 9) {
          ok = false;
        } else if (n == 0) {
          info += Info(std::to_string(call_.rate));
        } else if (n == 1) {
          info += Info("255");
        } else if (n == 3) {
          info += Info("FERRY-MODEMSIM 0.1");
        }
        break;
      }
      case 'L': case 'M': {
        if (Num(body, i) > 3) ok = false;
        break;
      }
      case 'B': {
        if (Num(body, i) > 1) ok = false;
        break;
      }
      case 'N': case 'Y': case 'C':
        Num(body, i);
        break;
      case 'P': case 'T':
        if (HasDigit(body, i)) ok = false;
        break;
      case 'S': case '?': case '=':
        --i;
        ok = Register(body, i, info);
        break;
      case '&': {
        if (i >= body.size()) {
          ok = false;
          break;
        }
        const char a = static_cast<char>(
            std::toupper(static_cast<unsigned char>(body[i++])));
        int n = Num(body, i);
        switch (a) {
          case 'C':
            if (n > 1) ok = false;
            else p_.amp_c = n;
            host_->LinesChanged(*this);
            break;
          case 'D':
            if (n > 3) ok = false;
            else p_.amp_d = n;
            break;
          case 'S':
            if (n > 1) ok = false;
            else p_.amp_s = n;
            host_->LinesChanged(*this);
            break;
          case 'F':
            if (n > 0) ok = false;
            else p_ = factory_;
            break;
          case 'W':
            if (n > 1) ok = false;
            else stored_[n] = p_;
            break;
          case 'V': {
            char buf[64];
            std::snprintf(buf, sizeof buf, "E%d Q%d V%d X%d W%d &C%d &D%d",
                          p_.echo, p_.quiet, p_.verbose, p_.x, p_.w,
                          p_.amp_c, p_.amp_d);
            info += Info("ACTIVE PROFILE:");
            info += Info(buf);
            std::string regs;
            for (int r = 0; r < 96; ++r) {
              if (!KnownRegister(r)) continue;
              std::snprintf(buf, sizeof buf, "S%02d:%03d ", r, p_.s[r]);
              regs += buf;
              if (regs.size() > 60) {
                regs.pop_back();
                info += Info(regs);
                regs.clear();
              }
            }
            if (!regs.empty()) {
              regs.pop_back();
              info += Info(regs);
            }
            break;
          }
          // Flow control, error correction, compression and friends:
          // accepted and stored nowhere (HAYES §5 table).
          case 'K': case 'Q': case 'M': case 'A': case 'H': case 'R':
          case 'B': case 'Y': case 'G': case 'L': case 'P': case 'T':
          case 'N': case 'U': case 'E': case 'X': case 'J':
            break;
          default:
            ok = false;
        }
        break;
      }
      case '\\': case '%': {
        // Vendor commands (\N, %C, ...): accepted as no-ops [choice].
        if (i >= body.size() ||
            !std::isalpha(static_cast<unsigned char>(body[i]))) {
          ok = false;
          break;
        }
        ++i;
        Num(body, i);
        break;
      }
      case '+':
        ok = Extended(body, i, info);
        break;
      default:
        ok = false;
    }
  }

  if (!ok) {
    SendResult(Result::kError);
    return;
  }
  if (!info.empty() && !mute_) host_->ToDte(*this, info);

  // The command that ends the line.
  switch (action) {
    case Action::kNone:
      SendResult(Result::kOk);
      break;
    case Action::kReset:
      ResetProfile(arg);
      SendResult(Result::kOk);
      break;
    case Action::kOnline:
      if (state_ != State::kOnlineCommand) {
        SendResult(Result::kError);
        break;
      }
      state_ = State::kOnline;
      plus_count_ = 0;
      last_dte_ = now;
      host_->Note(*this, "online again");
      SendConnectLines();
      if (!held_.empty()) {
        host_->ToDte(*this, held_);
        held_.clear();
      }
      break;
    case Action::kAnswer:
      if (state_ != State::kCommand) {
        SendResult(Result::kError);
        break;
      }
      state_ = State::kAnswering;
      if (ringing_) {
        host_->Answer(*this);
      } else {
        // Off-hook in answer mode with nobody calling: S7, then NO CARRIER.
        answer_no_call_ = true;
        answer_deadline_ = now + Secs(p_.s[7]);
      }
      break;
    case Action::kDial:
      if (state_ != State::kCommand && state_ != State::kOffhookCommand) {
        SendResult(Result::kError);
        break;
      }
      if (state_ == State::kOffhookCommand) {
        dial.number = pending_dial_.number + dial.number;
      }
      if (dial.stay_command) {
        pending_dial_ = dial;
        state_ = State::kOffhookCommand;
        SendResult(Result::kOk);
        break;
      }
      pending_dial_ = DialRequest{};
      last_number_ = dial.number;
      if (p_.amp_d >= 2 && !dtr_) {
        // &D2/&D3: no dialing while DTR is off.
        state_ = State::kCommand;
        SendResult(Result::kNoCarrier);
        break;
      }
      state_ = State::kDialing;
      ringing_ = false;
      host_->Dial(*this, dial);
      break;
  }
}

bool Modem::Register(const std::string& b, size_t& i, std::string& info) {
  int n = selected_reg_;
  if (i < b.size() && (b[i] == 'S' || b[i] == 's')) {
    ++i;
    n = Num(b, i);
    if (!KnownRegister(n)) return false;
    selected_reg_ = n;
  }
  if (i < b.size() && b[i] == '?') {
    ++i;
    char buf[8];
    std::snprintf(buf, sizeof buf, "%03d", p_.s[n]);
    info += Info(buf);
  } else if (i < b.size() && b[i] == '=') {
    ++i;
    int v = Num(b, i);
    const int max = (n == 3 || n == 4) ? 127 : 255;
    if (v > max) return false;
    p_.s[n] = static_cast<uint8_t>(v);
  }
  return true;
}

bool Modem::Extended(const std::string& b, size_t& i, std::string& info) {
  // Name up to '=', '?', ';' or the end of the line (HAYES §2.6).
  std::string name;
  while (i < b.size() && std::isalnum(static_cast<unsigned char>(b[i]))) {
    name += static_cast<char>(std::toupper(static_cast<unsigned char>(b[i])));
    ++i;
  }
  std::string rest;
  while (i < b.size() && b[i] != ';') rest += b[i++];
  if (i < b.size()) ++i;
  if (name == "FCLASS") {
    if (rest == "=0" || rest == "=") return true;
    if (rest == "?") {
      info += Info("0");
      return true;
    }
    if (rest == "=?") {
      info += Info("(0)");
      return true;
    }
    return false;
  }
  if (!rest.empty()) return false;
  if (name == "GMI") info += Info("FERRY");
  else if (name == "GMM") info += Info("MODEMSIM");
  else if (name == "GMR") info += Info("0.1");
  else if (name == "GCAP") info += Info("+GCAP: +FCLASS");
  else return false;
  return true;
}

// ---------------------------------------------------------------------------
// State changes

void Modem::HangupLocal() {
  // On-hook already (perhaps ringing): nothing to hang up.
  const bool was = state_ != State::kCommand;
  state_ = State::kCommand;
  dcd_carrier_ = false;
  held_.clear();
  plus_count_ = 0;
  answer_no_call_ = false;
  pending_dial_ = DialRequest{};
  lost_at_ = {};
  if (was) host_->Hangup(*this);
  host_->LinesChanged(*this);
}

void Modem::ResetProfile(int n) {
  if (state_ != State::kCommand) HangupLocal();
  p_ = stored_[n];
  host_->LinesChanged(*this);
}

void Modem::OnDialResult(Result r) {
  state_ = State::kCommand;
  dcd_carrier_ = false;
  host_->LinesChanged(*this);
  SendResult(r);
}

void Modem::OnDialOk() {
  state_ = State::kOffhookCommand;
  SendResult(Result::kOk);
}

void Modem::OnConnect(const CallInfo& info, TimePoint now) {
  call_ = info;
  state_ = State::kOnline;
  ringing_ = false;
  dcd_carrier_ = true;
  plus_count_ = 0;
  last_dte_ = now;
  answer_deadline_ = {};
  lost_at_ = {};
  SendConnectLines();
  host_->LinesChanged(*this);
}

void Modem::OnRing(TimePoint now) {
  last_now_ = now;
  if (state_ != State::kCommand) return;
  ringing_ = true;
  if (p_.s[1] < 255) ++p_.s[1];
  ring_reset_at_ = now + Secs(8.0);
  ri_until_ = now + Secs(2.0);
  host_->LinesChanged(*this);
  SendResult(Result::kRing);
  const bool dtr_blocks = p_.amp_d >= 2 && !dtr_;
  if (p_.s[0] > 0 && p_.s[1] >= p_.s[0] && !dtr_blocks && !mute_) {
    host_->Note(*this, "auto-answer");
    state_ = State::kAnswering;
    host_->Answer(*this);
  }
}

void Modem::OnRingingStopped() {
  ringing_ = false;
  if (state_ == State::kAnswering) {
    state_ = State::kCommand;
    host_->LinesChanged(*this);
    SendResult(Result::kNoCarrier);
  }
}

void Modem::OnCarrierLost(TimePoint now) {
  if (state_ == State::kDialing || state_ == State::kAnswering) {
    OnDialResult(Result::kNoCarrier);
    return;
  }
  if (state_ != State::kOnline && state_ != State::kOnlineCommand) return;
  if (p_.s[10] == 255) return;  // S10=255: never hang up (USR)
  lost_at_ = now + Secs(p_.s[10] * 0.1);
}

void Modem::OnDtr(bool on, TimePoint now) {
  if (on == dtr_) return;
  dtr_ = on;
  dtr_pending_ = !on;
  dtr_low_since_ = now;
  host_->Note(*this, on ? "DTR on" : "DTR off");
}

void Modem::OnRemoteData(std::string_view bytes) {
  if (state_ == State::kOnline) {
    host_->ToDte(*this, bytes);
  } else if (state_ == State::kOnlineCommand) {
    held_.append(bytes);
    if (held_.size() > kHeldLimit) {
      held_.erase(0, held_.size() - kHeldLimit);
    }
  }
}

void Modem::Tick(TimePoint now) {
  last_now_ = now;
  auto due = [now](TimePoint t) { return t != TimePoint{} && now >= t; };

  if (state_ == State::kOnline && plus_count_ == 3 && due(escape_at_)) {
    plus_count_ = 0;
    state_ = State::kOnlineCommand;
    lex_ = Lex::kIdle;
    host_->Note(*this, "escape");
    if (!mute_) SendResult(Result::kOk);
  }
  if (due(lost_at_)) {
    lost_at_ = {};
    host_->Note(*this, "carrier lost");
    HangupLocal();
    SendResult(Result::kNoCarrier);
  }
  if (answer_no_call_ && due(answer_deadline_)) {
    answer_no_call_ = false;
    answer_deadline_ = {};
    HangupLocal();
    SendResult(Result::kNoCarrier);
  }
  if (due(ring_reset_at_)) {
    ring_reset_at_ = {};
    p_.s[1] = 0;
  }
  if (due(ri_until_)) {
    ri_until_ = {};
    host_->LinesChanged(*this);
  }
  if (dtr_pending_ && !dtr_ &&
      now - dtr_low_since_ >= Secs(p_.s[25] * 0.01)) {
    // HAYES §9.1: what a DTR drop means depends on &D.
    dtr_pending_ = false;
    const bool in_call = state_ != State::kCommand;
    switch (p_.amp_d) {
      case 0:
        break;
      case 1:
        if (state_ == State::kOnline) {
          state_ = State::kOnlineCommand;
          plus_count_ = 0;
          SendResult(Result::kOk);
        }
        break;
      case 2:
        if (in_call) {
          HangupLocal();
          SendResult(Result::kOk);
        }
        break;
      default:
        if (in_call) HangupLocal();
        ResetProfile(0);
        break;
    }
  }
}

TimePoint Modem::NextDeadline() const {
  TimePoint t = TimePoint::max();
  auto take = [&t](TimePoint x) {
    if (x != TimePoint{}) t = std::min(t, x);
  };
  if (state_ == State::kOnline && plus_count_ == 3) take(escape_at_);
  take(lost_at_);
  if (answer_no_call_) take(answer_deadline_);
  take(ring_reset_at_);
  take(ri_until_);
  if (dtr_pending_) take(dtr_low_since_ + Secs(p_.s[25] * 0.01));
  return t;
}

}  // namespace ferry::modemsim
