#include "gateway/smtp_client.h"

#include <openssl/evp.h>
#include <zstd.h>

#include <algorithm>
#include <boost/asio/ssl/context.hpp>
#include <cctype>
#include <optional>

#include "gateway/log.h"
#include "gateway/smtp_lineio.h"
#include "gateway/smtp_parser.h"

namespace ferry::gw {
namespace {

using queue::Action;
using queue::QueueId;
using queue::RecipientState;
using queue::Transition;

constexpr const char* kDupReason =
    "connection lost after end of data; may be duplicated";

bool ascii(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0x80) == 0;
  });
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string base64(std::string_view in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()),
                          static_cast<int>(in.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::error_code protocol_error() {
  return std::make_error_code(std::errc::protocol_error);
}

using Reply = SmtpReply;

// What the server offered in its EHLO reply.
struct Extensions {
  bool esmtp = false;  // EHLO worked (else HELO: none of the below)
  bool pipelining = false, chunking = false, eightbit = false,
       smtputf8 = false, dsn = false, starttls = false, enhanced = false;
  bool auth_plain = false;
  uint64_t size = 0;  // SIZE limit; 0 = none declared
  bool size_offered = false;
};

// One message being sent: its recipients for the route and what the
// server said to each.
struct Msg {
  QueueId id;
  queue::MessageInfo info;
  std::vector<uint32_t> rcpts;  // recipient indexes for this route
  std::vector<Reply> rcpt_reply;
};

class Client {
 public:
  Client(const LinkContext& ctx, std::unique_ptr<LinkTransport> t,
         std::string route, SmtpClientOptions opts)
      : ctx_(ctx),
        t_(std::move(t)),
        route_(std::move(route)),
        opts_(std::move(opts)),
        sid_("smtp-" + route_),
        io_(*t_, opts_.timeout, ec_, why_, "reply line too long") {}

  asio::awaitable<CallResult> run() {
    auto start = std::chrono::steady_clock::now();
    auto wall_start = queue::Clock::now();

    co_await converse();
    t_->close();

    // Summary, as link_session writes it.
    res_.ec = ec_;
    res_.peer = route_;
    if (ec_ && res_.result == "ok") res_.result = "dropped";
    res_.bytes_in = t_->bytes_in();
    res_.bytes_out = t_->bytes_out();
    res_.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    std::string text = "call role=client peer=" + route_ +
                       " tls=" + (tls_on_ ? "yes" : "no") +
                       " bytes_out=" + std::to_string(res_.bytes_out) +
                       " bytes_in=" + std::to_string(res_.bytes_in) +
                       " messages_out=" + std::to_string(res_.messages_out) +
                       " duration=" + std::to_string(res_.duration.count()) +
                       "ms result=" + ferry::log::quote(res_.result);
    if (ec_) text += " error=" + ferry::log::quote(why_);
    log(text);
    if (ctx_.spool != nullptr) {
      queue::CallRecord rec;
      rec.peer = route_;
      rec.start = wall_start;
      rec.end = queue::Clock::now();
      rec.bytes_out = res_.bytes_out;
      rec.bytes_in = res_.bytes_in;
      rec.messages_out = res_.messages_out;
      rec.result = res_.result;
      if (auto e = ctx_.spool->log_call(rec)) {
        log("warning: cannot record the call: " + e.message());
      }
    }
    co_return res_;
  }

 private:
  const LinkContext& ctx_;
  std::unique_ptr<LinkTransport> t_;
  std::string route_;
  SmtpClientOptions opts_;
  std::string sid_;
  std::error_code ec_;  // first failure: ends the call
  std::string why_;
  SmtpLineIo io_;  // uses t_, opts_, ec_ and why_: declared after them
  bool tls_on_ = false;
  std::optional<asio::ssl::context> tls_ctx_;
  Extensions ext_;
  CallResult res_;

  void fail(std::error_code e, std::string text) {
    io_.fail(e, std::move(text));
  }
  void log(std::string_view text) { ferry::log::line(sid_, text); }

  // ---- bytes ----

  void send(std::string_view s) { io_.send(s); }

  // ---- the call ----

  asio::awaitable<void> converse() {
    if (opts_.atrn) log("atrn=skipped reason=\"not implemented\"");
    if (!co_await open()) co_return;

    std::vector<Msg> batch;
    if (!load(batch)) co_return;
    for (Msg& m : batch) {
      if (!co_await deliver(m)) {
        // The line is gone: what was not settled stays for the next call.
        for (Msg& rest : batch) {
          if (!rest.rcpts.empty()) unmark(rest);
        }
        co_return;
      }
    }
    co_await quit();
  }

  asio::awaitable<void> quit() {
    send("QUIT\r\n");
    Reply r;
    co_await io_.read_reply(r);
    // Everything was settled before QUIT; a server that hangs up first
    // loses us nothing.
    ec_ = {};
    why_.clear();
  }

  // Greeting, EHLO/HELO, STARTTLS, AUTH.
  asio::awaitable<bool> open() {
    Reply r;
    if (!co_await io_.read_reply(r)) co_return false;
    if (r.code != 220) {
      res_.result = "refused";
      fail(protocol_error(), "greeting " + ferry::log::quote(r.whole()));
      co_await quit_after_refusal();
      co_return false;
    }
    if (!co_await hello()) co_return false;

    // STARTTLS.  No certificate is verified (see the header): the point is
    // to keep the mail off a passive listener on the line.
    if (opts_.starttls != PeerConfig::Tls::no) {
      if (!ext_.starttls) {
        if (opts_.starttls == PeerConfig::Tls::required) {
          res_.result = "tls failed";
          fail(std::make_error_code(std::errc::permission_denied),
               "server offers no STARTTLS");
          co_await quit_after_refusal();
          co_return false;
        }
      } else {
        send("STARTTLS\r\n");
        if (!co_await io_.read_reply(r)) co_return false;
        if (r.code != 220) {
          if (opts_.starttls == PeerConfig::Tls::required) {
            res_.result = "tls failed";
            fail(protocol_error(), "STARTTLS " + ferry::log::quote(r.whole()));
            co_await quit_after_refusal();
            co_return false;
          }
          log("tls=refused reply=" + ferry::log::quote(r.whole()));
        } else {
          io_.discard_input();  // nothing the server sent in the clear counts
          tls_ctx_.emplace(asio::ssl::context::tls_client);
          tls_ctx_->set_verify_mode(asio::ssl::verify_none);
          std::error_code e;
          co_await t_->start_tls(*tls_ctx_, false, e);
          if (e) {
            res_.result = "tls failed";
            fail(e, "TLS handshake: " + e.message());
            co_return false;
          }
          tls_on_ = true;
          log(std::string("tls=") + SSL_get_version(t_->ssl()));
          if (!co_await hello()) co_return false;
        }
      }
    }

    // AUTH PLAIN: never in the clear unless the operator turned TLS off.
    if (!opts_.auth_user.empty()) {
      if (!tls_on_ && opts_.starttls != PeerConfig::Tls::no) {
        res_.result = "auth failed";
        fail(std::make_error_code(std::errc::permission_denied),
             "no TLS: the password is not sent in the clear");
        co_await quit_after_refusal();
        co_return false;
      }
      if (!ext_.auth_plain) {
        res_.result = "auth failed";
        fail(std::make_error_code(std::errc::permission_denied),
             "server offers no AUTH PLAIN");
        co_await quit_after_refusal();
        co_return false;
      }
      std::string cred;
      cred += '\0';
      cred += opts_.auth_user;
      cred += '\0';
      cred += opts_.auth_password;
      send("AUTH PLAIN " + base64(cred) + "\r\n");
      if (!co_await io_.read_reply(r)) co_return false;
      if (r.code != 235) {
        res_.result = "auth failed";
        fail(std::make_error_code(std::errc::permission_denied),
             "AUTH " + ferry::log::quote(r.whole()));
        co_await quit_after_refusal();
        co_return false;
      }
      log("auth=ok user=" + opts_.auth_user);
    }
    co_return true;
  }

  // Ends a call we will not use, politely; keeps the first failure.
  asio::awaitable<void> quit_after_refusal() {
    std::error_code keep = ec_;
    std::string keep_why = why_;
    ec_ = {};
    send("QUIT\r\n");
    Reply r;
    co_await io_.read_reply(r);
    ec_ = keep;
    why_ = keep_why;
  }

  asio::awaitable<bool> hello() {
    ext_ = Extensions{};
    send("EHLO " + opts_.hostname + "\r\n");
    Reply r;
    if (!co_await io_.read_reply(r)) co_return false;
    if (r.code == 250) {
      ext_.esmtp = true;
      for (size_t i = 1; i < r.texts.size(); ++i) {
        std::string line = upper(r.texts[i]);
        std::string kw = line.substr(0, line.find(' '));
        std::string arg =
            kw.size() < line.size() ? line.substr(kw.size() + 1) : "";
        if (kw == "PIPELINING") ext_.pipelining = true;
        if (kw == "CHUNKING") ext_.chunking = true;
        if (kw == "8BITMIME") ext_.eightbit = true;
        if (kw == "SMTPUTF8") ext_.smtputf8 = true;
        if (kw == "DSN") ext_.dsn = true;
        if (kw == "STARTTLS") ext_.starttls = true;
        if (kw == "ENHANCEDSTATUSCODES") ext_.enhanced = true;
        if (kw == "AUTH" && (" " + arg + " ").find(" PLAIN ") != arg.npos) {
          ext_.auth_plain = true;
        }
        if (kw == "SIZE") {
          ext_.size_offered = true;
          uint64_t v = 0;
          for (char c : arg) {
            if (c < '0' || c > '9') break;
            v = v * 10 + static_cast<uint64_t>(c - '0');
          }
          ext_.size = v;
        }
      }
      co_return true;
    }
    // RFC 5321 4.1.4: a server that does not know EHLO gets HELO.
    send("HELO " + opts_.hostname + "\r\n");
    if (!co_await io_.read_reply(r)) co_return false;
    if (r.code != 250) {
      res_.result = "refused";
      fail(protocol_error(), "HELO " + ferry::log::quote(r.whole()));
      co_await quit_after_refusal();
      co_return false;
    }
    co_return true;
  }

  // ---- the messages ----

  // Everything queued or deferred for the route, marked in_flight.
  bool load(std::vector<Msg>& batch) {
    std::vector<QueueId> ids;
    if (auto e = ctx_.spool->route_messages(route_, ids)) {
      fail(e, "spool: " + e.message());
      return false;
    }
    std::vector<Transition> ts;
    for (const QueueId& id : ids) {
      Msg m;
      m.id = id;
      if (ctx_.spool->get(id, m.info)) continue;  // left meanwhile
      for (const auto& r : m.info.recipients) {
        if (r.route == route_ && (r.state == RecipientState::queued ||
                                  r.state == RecipientState::deferred)) {
          m.rcpts.push_back(r.index);
          Transition tr;
          tr.id = id;
          tr.recipient = r.index;
          tr.action = Action::in_flight;
          ts.push_back(tr);
        }
      }
      if (!m.rcpts.empty()) batch.push_back(std::move(m));
    }
    std::vector<queue::TransitionResult> out;
    if (auto e = ctx_.apply ? ctx_.apply(ts, out)
                            : ctx_.spool->apply(ts, out)) {
      fail(e, "spool: " + e.message());
      return false;
    }
    return true;
  }

  // A message whose turn never came (the line dropped first): deferred,
  // due now.
  void unmark(Msg& m) {
    Reply r;
    r.code = 451;
    finish(m, std::vector<Reply>(m.rcpts.size(), r),
           "connection lost before the message was sent");
  }

  // Records one reply per recipient; logs the message's line; calls
  // on_failed when a recipient failed.  `reason`, when set, replaces the
  // reply in the log line.
  void finish(Msg& m, const std::vector<Reply>& replies,
              const std::string& reason) {
    std::vector<Transition> ts;
    size_t sent = 0, deferred = 0, failed = 0;
    for (size_t k = 0; k < m.rcpts.size(); ++k) {
      const Reply& r = replies[k];
      Transition tr;
      tr.id = m.id;
      tr.recipient = m.rcpts[k];
      tr.reply = reason.empty() ? r.whole() : "451 4.4.2 " + reason;
      if (r.code / 100 == 2) {
        tr.action = Action::delivered;
        ++sent;
      } else if (r.code / 100 == 5) {
        tr.action = Action::failed;
        ++failed;
      } else {
        tr.action = Action::deferred;
        tr.when = queue::Clock::now();
        ++deferred;
      }
      ts.push_back(tr);
    }
    std::vector<queue::TransitionResult> out;
    if (auto e = ctx_.apply ? ctx_.apply(ts, out)
                            : ctx_.spool->apply(ts, out)) {
      ferry::log::line(m.id, "warning: cannot record delivery: " + e.message());
    }
    if (sent > 0) ++res_.messages_out;
    {
      const char* result = sent == ts.size()       ? "sent"
                           : deferred == ts.size() ? "deferred"
                           : failed == ts.size()   ? "failed"
                                                   : "mixed";
      // The reply that decided most: the first failure, else the first
      // deferral, else the first success.
      const Reply* pick = nullptr;
      for (int cls : {5, 4, 2}) {
        for (const Reply& r : replies) {
          if (pick == nullptr && r.code / 100 == cls) pick = &r;
        }
      }
      std::string text = "peer=" + route_ +
                         " bytes=" + std::to_string(m.info.size) +
                         " rcpts=" + std::to_string(ts.size()) +
                         " result=" + result;
      if (!reason.empty()) {
        text += " reason=" + ferry::log::quote(reason);
      } else if (pick != nullptr) {
        text += " reply=" + ferry::log::quote(pick->whole());
        std::string st = pick->status();
        if (!st.empty()) text += " status=" + st;
      }
      ferry::log::line(m.id, text);
    }
    m.rcpts.clear();  // settled
    if (failed > 0 && !ctx_.apply && ctx_.on_failed) ctx_.on_failed(m.id);
  }

  // Sends one message.  Returns false when the line is gone (the message
  // is then settled as deferred).
  asio::awaitable<bool> deliver(Msg& m) {
    const size_t n = m.rcpts.size();
    std::vector<Reply> replies(n);
    auto all = [&](int code, const std::string& text) {
      Reply r;
      r.code = code;
      r.texts.push_back(text);
      return std::vector<Reply>(n, r);
    };

    // Refusals we can tell before sending anything.
    bool utf8 = !ascii(m.info.sender);
    for (uint32_t k : m.rcpts) {
      if (!ascii(m.info.recipients[k].address)) utf8 = true;
    }
    if (utf8 && !ext_.smtputf8) {
      finish(m, all(553, "5.6.7 the server does not offer SMTPUTF8"), "");
      co_return true;
    }
    if (ext_.size > 0 && m.info.size > ext_.size) {
      finish(m,
             all(552, "5.3.4 message larger than the server's limit of " +
                          std::to_string(ext_.size) + " bytes"),
             "");
      co_return true;
    }
    std::string stored;
    if (auto e = ctx_.spool->read_stored_body(m.id, stored)) {
      finish(m, all(451, "4.3.0 cannot read the body: " + e.message()), "");
      co_return true;
    }

    // Envelope.
    std::string mail = "MAIL FROM:<" + m.info.sender + ">";
    if (ext_.size_offered) mail += " SIZE=" + std::to_string(m.info.size);
    if (ext_.eightbit) mail += " BODY=8BITMIME";
    if (utf8) mail += " SMTPUTF8";
    if (ext_.dsn) {
      if (m.info.ret == queue::Ret::full) mail += " RET=FULL";
      if (m.info.ret == queue::Ret::hdrs) mail += " RET=HDRS";
      if (!m.info.envid.empty()) mail += " ENVID=" + smtp::xtext_encode(m.info.envid);
    }
    send(mail + "\r\n");
    Reply mail_reply;
    // DATA closes a pipelined group (RFC 2920); BDAT waits for the replies
    // so that a message nobody accepted is not sent at all.
    const bool use_bdat = ext_.chunking;
    bool data_sent = false;
    if (!ext_.pipelining) {
      if (!co_await io_.read_reply(mail_reply)) co_return dropped(m, false);
      if (mail_reply.code / 100 != 2) {
        finish(m, std::vector<Reply>(n, mail_reply), "");
        co_return co_await reset();
      }
    }
    for (size_t k = 0; k < n; ++k) {
      const auto& r = m.info.recipients[m.rcpts[k]];
      std::string rc = "RCPT TO:<" + r.address + ">";
      if (ext_.dsn && r.notify) rc += " NOTIFY=" + smtp::format_notify(r.notify);
      if (ext_.dsn && !r.orcpt.empty()) rc += " ORCPT=" + r.orcpt;
      send(rc + "\r\n");
      if (!ext_.pipelining && !co_await io_.read_reply(replies[k])) {
        co_return dropped(m, false);
      }
    }
    if (ext_.pipelining) {
      if (!use_bdat) {
        send("DATA\r\n");
        data_sent = true;
      }
      if (!co_await io_.read_reply(mail_reply)) co_return dropped(m, false);
      for (size_t k = 0; k < n; ++k) {
        if (!co_await io_.read_reply(replies[k])) co_return dropped(m, false);
      }
    }
    if (mail_reply.code / 100 != 2) {
      if (data_sent) {
        Reply d;
        if (!co_await io_.read_reply(d)) co_return dropped(m, false);
      }
      finish(m, std::vector<Reply>(n, mail_reply), "");
      co_return co_await reset();
    }
    bool any = std::any_of(replies.begin(), replies.end(),
                           [](const Reply& r) { return r.code / 100 == 2; });
    if (!data_sent && any && !use_bdat) {
      send("DATA\r\n");
      data_sent = true;
    }
    if (data_sent) {
      Reply d;
      if (!co_await io_.read_reply(d)) co_return dropped(m, false);
      if (d.code != 354) {
        if (any) {
          for (auto& r : replies) {
            if (r.code / 100 == 2) r = d;
          }
        }
        finish(m, replies, "");
        co_return co_await reset();
      }
      if (!any) {
        // A server that says 354 with no recipient: end an empty body.
        send(".\r\n");
        if (!co_await io_.read_reply(d)) co_return dropped(m, false);
        finish(m, replies, "");
        co_return true;
      }
    }
    if (!any) {
      finish(m, replies, "");
      co_return co_await reset();
    }

    // Body.
    Reply end;
    int got = co_await send_body(m, stored, use_bdat, end);
    if (got < 0) co_return dropped(m, got == -2);
    if (got == 0) {
      finish(m, all(451, "4.3.0 cannot decompress the stored body"), "");
      co_return false;  // the transaction cannot be ended cleanly
    }
    for (auto& r : replies) {
      if (r.code / 100 == 2) r = end;
    }
    finish(m, replies, "");
    co_return true;
  }

  // Streams the body, decompressing as it goes.  Returns 1 with the reply
  // to the end of data, 0 if the stored body is unreadable (the line was
  // left mid-transaction: the caller hangs up), -1 on a drop before the
  // end of data went out, -2 on a drop after it.
  asio::awaitable<int> send_body(Msg& m, const std::string& stored,
                                 bool bdat, Reply& end) {
    const size_t chunk = std::max<size_t>(opts_.chunk_size, 512);
    std::unique_ptr<ZSTD_DStream, size_t (*)(ZSTD_DStream*)> z(
        ZSTD_createDStream(), ZSTD_freeDStream);
    ZSTD_initDStream(z.get());
    ZSTD_inBuffer in{stored.data(), stored.size(), 0};
    std::string piece(chunk, '\0');
    bool bol = true;        // DATA: at the start of a line
    char last = '\n';       // DATA: last body byte sent
    size_t bdat_pending = 0;  // BDAT chunks whose reply is still due
    Reply bad;              // BDAT: first refused chunk
    // Pipelined BDAT reads the chunks' replies only after LAST: each is a
    // few dozen bytes, so even a 35 MiB message's replies fit in the
    // socket buffers and the server never blocks writing them.
    bool done = false;
    while (!done) {
      ZSTD_outBuffer out{piece.data(), piece.size(), 0};
      size_t rc = ZSTD_decompressStream(z.get(), &out, &in);
      if (ZSTD_isError(rc)) {
        log(m.id + " zstd: " + ZSTD_getErrorName(rc));
        fail(protocol_error(), "corrupt stored body");
        co_return 0;
      }
      done = rc == 0;  // the one frame is decoded and flushed
      if (rc != 0 && out.pos == 0 && in.pos == in.size) {
        fail(protocol_error(), "truncated stored body");
        co_return 0;
      }
      std::string_view bytes(piece.data(), out.pos);
      if (bdat) {
        if (bytes.empty() && !done) continue;
        send("BDAT " + std::to_string(bytes.size()) + (done ? " LAST" : "") +
             "\r\n");
        send(bytes);
        ++bdat_pending;
        if (!co_await io_.flush()) co_return done ? -2 : -1;
        // Without PIPELINING each chunk waits for its reply.
        while (bdat_pending > 0 && (!ext_.pipelining || done)) {
          Reply r;
          if (!co_await io_.read_reply(r)) co_return done ? -2 : -1;
          --bdat_pending;
          if (r.code / 100 != 2 && bad.code == 0) bad = r;
          if (bdat_pending == 0) end = bad.code != 0 ? bad : r;
        }
      } else {
        std::string out_bytes;
        out_bytes.reserve(bytes.size() + bytes.size() / 64 + 8);
        for (char c : bytes) {
          if (bol && c == '.') out_bytes += '.';
          out_bytes += c;
          bol = c == '\n';
        }
        if (!bytes.empty()) last = bytes.back();
        if (done) {
          if (last != '\n') out_bytes += "\r\n";
          out_bytes += ".\r\n";
        }
        send(out_bytes);
        if (!co_await io_.flush()) co_return done ? -2 : -1;
        if (done && !co_await io_.read_reply(end)) co_return -2;
      }
    }
    co_return 1;
  }

  // The line dropped while `m` was being sent.  `after_end`: the end of
  // data had gone out, so the far side may hold the message already.
  bool dropped(Msg& m, bool after_end) {
    Reply r;
    r.code = 451;
    r.texts.push_back("4.4.2 connection lost during the transfer");
    finish(m, std::vector<Reply>(m.rcpts.size(), r),
           after_end ? kDupReason : "connection lost during the transfer");
    return false;
  }

  // After a transaction that did not end with the body: RSET.
  asio::awaitable<bool> reset() {
    send("RSET\r\n");
    Reply r;
    if (!co_await io_.read_reply(r)) co_return false;
    co_return true;
  }
};

}  // namespace

asio::awaitable<CallResult> run_smtp_client(const LinkContext& ctx,
                                            std::unique_ptr<LinkTransport> t,
                                            std::string route,
                                            SmtpClientOptions opts) {
  Client c(ctx, std::move(t), std::move(route), std::move(opts));
  co_return co_await c.run();
}

}  // namespace ferry::gw
