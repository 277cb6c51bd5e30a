// Hayes modem driver: reset and init, dial, answer, data mode, hang-up.
//
// A Modem owns one serial port (SerialPort), the UUCP lock(s) for it and a
// ResultParser.  Its sequences are Asio coroutines; every wait is bounded by
// a timeout taken from the ModemProfile (scaled by profile.time_scale), and
// nothing blocks the io_context.
//
//   auto [ec, m] = co_await Modem::open(ex, "/dev/ttyS0", profile,
//                                       "/var/lock", log);
//   CallResult r = co_await m->dial("5551234");
//   if (r) { ... use m->stream() ...; }
//   co_await m->hangup();
//
// Failures come back as std::error_code in modem_category() (ModemErrc),
// classified for the scheduler; the result line the modem gave is kept in
// CallResult::result_text.  Every event is logged as one line:
//   modem NAME: event=dial number=5551234 result=BUSY error=busy
//
// Data mode: after CONNECT, stream() is an AsyncReadStream/AsyncWriteStream
// (usable under asio::ssl::stream).  Carrier loss surfaces as
// ModemErrc::carrier_lost on its reads and writes.  It is detected from DCD
// when the port has the line (libserialport or the emulator's control
// socket), otherwise from a "NO CARRIER" that ends a chunk of received data
// (the Hayes-recommended scan; data that happens to end in exactly
// "\r\nNO CARRIER\r\n" is taken for carrier loss on such ports) or from the
// port hanging up (EOF/EIO).
//
// Concurrency: a Modem and its stream are used from one strand (or a
// single-threaded io_context).  At most one sequence (dial, wait_for_call,
// hangup, command) runs at a time, and none while a stream operation is
// pending; hangup() cancels pending stream operations first.  The Modem
// must outlive every operation started on it.
// Known limitations (also listed in the issue report):
// - ModemStream reads into and writes from the first buffer of a buffer
//   sequence only (legal for read_some/write_some; asio::ssl uses one).
// - Where DCD is unknown (plain PTY, no control socket), a read chunk that
//   ends in exactly "\r\nNO CARRIER\r\n" is taken for carrier loss even if
//   the far end sent those bytes as data.
// - DCD is polled every profile.line_poll (TIOCMIWAIT is not used), so a
//   drop is noticed up to that late; the modem's NO CARRIER text usually
//   comes first anyway.
// - If a CONNECT line ends in a bare CR and its LF arrives with the first
//   data, a leading LF of the data stream is dropped as framing.
// - Numeric results above 8 are read with the Hayes table; vendors differ
//   (HAYES §4.3), which is why the init string forces V1.
// - Caller-ID lines after RING are logged as text and not interpreted.
// - close() without hangup() leaves the call up on ports without DTR.
#ifndef FERRY_MODEM_MODEM_H_
#define FERRY_MODEM_MODEM_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "modem/at_parser.h"
#include "modem/error.h"
#include "modem/lock.h"
#include "modem/port.h"
#include "modem/profile.h"

namespace ferry::modem {

struct ConnectInfo {
  unsigned long speed = 0;          // from CONNECT; 0 if not given
  unsigned long carrier_speed = 0;  // from a CARRIER line, if any
  std::string protocol;             // LAPM, MNP, REL, NONE ...
  std::string compression;          // V42BIS, V44, NONE ...
  std::string modulation;           // V34, V90 ...
  std::string suffix;               // CONNECT text after the rate
  bool error_control = false;
  std::string text;  // the CONNECT line as received
};

// Outcome of dial() and wait_for_call(): connected (no error) or a
// classified failure.
struct CallResult {
  std::error_code ec;
  ConnectInfo connect;      // valid when !ec
  std::string result_text;  // the final line from the modem ("BUSY"), if any
  explicit operator bool() const { return !ec; }
};

// Outcome of one AT command.
struct CommandReply {
  std::error_code ec;              // not_responding on timeout, I/O errors
  AtResult final;                  // the final result when !ec
  std::vector<std::string> info;   // information text lines before it
  std::vector<AtResult> progress;  // CARRIER / PROTOCOL / COMPRESSION lines
};

class Modem;

// The data stream of a connected modem.  Satisfies Asio's AsyncReadStream
// and AsyncWriteStream; reads may return fewer bytes than asked.  Only the
// first buffer of a buffer sequence is used.
class ModemStream {
 public:
  using executor_type = boost::asio::any_io_executor;
  using lowest_layer_type = ModemStream;

  executor_type get_executor() const;
  lowest_layer_type& lowest_layer() { return *this; }

  template <typename MutableBufferSequence, typename Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token);

  template <typename ConstBufferSequence, typename Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token);

 private:
  friend class Modem;
  explicit ModemStream(Modem* modem) : modem_(modem) {}
  Modem* modem_;
};

class Modem {
 public:
  using ms = std::chrono::milliseconds;

  struct OpenResult {
    std::error_code ec;
    std::unique_ptr<Modem> modem;
  };

  // Locks the port in `lock_dir`, opens it, resets and initialises the
  // modem.  Fails with port_locked (a live process holds the lock, after
  // waiting profile.lock_wait), port_unavailable, not_responding (nothing
  // answered ATZ or the init string), modem_error (the init string was
  // refused) or the system error of the lock directory.
  static boost::asio::awaitable<OpenResult> open(
      boost::asio::any_io_executor ex, std::string port_path,
      ModemProfile profile, std::string lock_dir, LogFn log = {});

  ~Modem();
  Modem(const Modem&) = delete;
  Modem& operator=(const Modem&) = delete;

  // Dials `number` (digits and Hayes dial modifiers only; the profile's
  // mode and prefix are added).  Connected: CallResult with no error and
  // the modem online.  Otherwise busy, no_answer, no_dialtone, no_carrier,
  // blacklisted, delayed, voice, call_failed, modem_error, not_responding
  // or std::errc::invalid_argument for a number with other characters.
  boost::asio::awaitable<CallResult> dial(std::string number);

  // Waits for an incoming call and answers it: after profile.answer_rings
  // RINGs with ATA, or (AnswerMethod::modem) by letting the modem answer
  // itself with S0.  `max_wait` bounds the wait for the first RING
  // (zero = no bound).  Fails with no_call, call_abandoned (ringing
  // stopped for profile.ring_gap), no_carrier, not_responding ...
  boost::asio::awaitable<CallResult> wait_for_call(ms max_wait = ms(0));

  // Ends the call: DTR drop where the port has the line (and the profile
  // allows), else guard time, +++, guard time, ATH.  Also fine after the
  // carrier was lost (then only ATH).  Returns hangup_failed if the modem
  // would not confirm.
  boost::asio::awaitable<std::error_code> hangup();

  // Sends one command line (without CR) and waits for its final result.
  // RINGs that arrive meanwhile are counted for wait_for_call(), never
  // taken as the answer.
  boost::asio::awaitable<CommandReply> command(std::string line, ms timeout);

  ModemStream& stream() { return stream_; }
  bool online() const { return online_; }
  const std::string& name() const { return name_; }
  const ModemProfile& profile() const { return profile_; }
  SerialPort& port() { return *port_; }
  boost::asio::any_io_executor get_executor() const { return ex_; }

  // Closes the port and releases the lock.  If a call is still up and DTR
  // can be dropped, it is dropped (the call ends); otherwise the modem
  // stays off-hook until it notices, so prefer co_await hangup() first.
  void close();

 private:
  friend class ModemStream;

  Modem(boost::asio::any_io_executor ex, ModemProfile profile, std::string name,
        LogFn log);

  void log(const std::string& kv) const;
  ms scaled(ms d) const { return profile_.scaled(d); }

  boost::asio::awaitable<std::error_code> reset_and_init();
  boost::asio::awaitable<std::error_code> write_all(std::string bytes,
                                                    ms timeout);
  // Reads more bytes into the parser; not_responding at the deadline.
  boost::asio::awaitable<std::error_code> read_more(
      std::chrono::steady_clock::time_point deadline);
  boost::asio::awaitable<void> sleep(ms d);
  // Next non-echo result line, or an error at the deadline.
  boost::asio::awaitable<std::error_code> next_line(
      std::chrono::steady_clock::time_point deadline, AtResult& out);
  void enter_data_mode(const ConnectInfo& info);
  void note_ring();
  boost::asio::awaitable<void> watch_carrier(std::weak_ptr<int> life,
                                             unsigned call);

  // Stream support (see ModemStream).
  boost::system::error_code before_read(boost::asio::mutable_buffer buf,
                                        std::size_t& n);
  boost::system::error_code after_read(boost::asio::mutable_buffer buf,
                                       std::size_t& n,
                                       boost::system::error_code ec);
  boost::system::error_code before_write();
  boost::system::error_code after_write(boost::system::error_code ec);
  void carrier_lost(const char* source);

  boost::asio::any_io_executor ex_;
  ModemProfile profile_;
  std::string name_;
  LogFn log_;
  std::vector<UucpLock> locks_;
  std::unique_ptr<SerialPort> port_;
  ResultParser parser_;
  ModemStream stream_{this};

  bool online_ = false;
  bool lost_ = false;      // carrier lost during this call
  bool listen_logged_ = false;  // "event=listen" said since the last call
  bool dcd_seen_ = false;  // DCD was up during this call
  bool owes_lf_ = false;   // first data byte may be CONNECT's LF
  unsigned call_ = 0;      // call counter, for the carrier watcher
  std::string pending_;    // data that arrived with the CONNECT line
  unsigned rings_ = 0;     // RINGs seen and not yet answered
  std::chrono::steady_clock::time_point last_ring_{};
  std::chrono::steady_clock::time_point call_start_{};
  std::uint64_t bytes_in_ = 0, bytes_out_ = 0;
  std::shared_ptr<int> life_ = std::make_shared<int>(0);
};

// ---- ModemStream templates ----

inline ModemStream::executor_type ModemStream::get_executor() const {
  return modem_->get_executor();
}

template <typename MutableBufferSequence, typename Token>
auto ModemStream::async_read_some(const MutableBufferSequence& buffers,
                                  Token&& token) {
  namespace asio = boost::asio;
  asio::mutable_buffer first = *asio::buffer_sequence_begin(buffers);
  return asio::async_initiate<Token,
                              void(boost::system::error_code, std::size_t)>(
      [m = modem_](auto handler, asio::mutable_buffer buf) {
        auto ex = asio::get_associated_executor(handler, m->ex_);
        std::size_t n = 0;
        boost::system::error_code ec = m->before_read(buf, n);
        if (ec || n > 0) {
          asio::post(ex, [h = std::move(handler), ec, n]() mutable {
            std::move(h)(ec, n);
          });
          return;
        }
        m->port_->descriptor().async_read_some(
            buf, asio::bind_executor(ex, [m, buf, h = std::move(handler)](
                                             boost::system::error_code e,
                                             std::size_t got) mutable {
              e = m->after_read(buf, got, e);
              std::move(h)(e, got);
            }));
      },
      token, first);
}

template <typename ConstBufferSequence, typename Token>
auto ModemStream::async_write_some(const ConstBufferSequence& buffers,
                                   Token&& token) {
  namespace asio = boost::asio;
  asio::const_buffer first = *asio::buffer_sequence_begin(buffers);
  return asio::async_initiate<Token,
                              void(boost::system::error_code, std::size_t)>(
      [m = modem_](auto handler, asio::const_buffer buf) {
        auto ex = asio::get_associated_executor(handler, m->ex_);
        boost::system::error_code ec = m->before_write();
        if (ec) {
          asio::post(ex, [h = std::move(handler), ec]() mutable {
            std::move(h)(ec, std::size_t{0});
          });
          return;
        }
        m->port_->descriptor().async_write_some(
            buf, asio::bind_executor(ex, [m, h = std::move(handler)](
                                             boost::system::error_code e,
                                             std::size_t n) mutable {
              e = m->after_write(e);
              m->bytes_out_ += n;
              std::move(h)(e, n);
            }));
      },
      token, first);
}

}  // namespace ferry::modem

#endif  // FERRY_MODEM_MODEM_H_
