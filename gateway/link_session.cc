#include "gateway/link_session.h"

#include <openssl/evp.h>
#include <zstd.h>

#include <algorithm>
#include <deque>
#include <map>

#include "gateway/address.h"
#include "gateway/log.h"
#include "gateway/maildir.h"
#include "gateway/smtp_lineio.h"
#include "gateway/smtp_parser.h"

namespace ferry::gw {
namespace {

using queue::Action;
using queue::QueueId;
using queue::RecipientState;
using queue::Transition;

// SHA-256 of `bytes`, base64url without padding (43 characters).
std::string digest_b64url(std::string_view bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(bytes.data(), bytes.size(), md, &n, EVP_sha256(), nullptr);
  static const char* a =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (unsigned i = 0; i < n; ++i) {
    acc = (acc << 8) | md[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += a[(acc >> bits) & 63];
    }
  }
  if (bits > 0) out += a[(acc << (6 - bits)) & 63];
  return out;
}

bool ascii_only(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (static_cast<unsigned char>(c) & 0x80) == 0;
  });
}

bool valid_tid(std::string_view t) {
  if (t.empty() || t.size() > 64) return false;
  return std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
           (c >= 'a' && c <= 'z') || c == '-' || c == '_' || c == '.';
  });
}

bool parse_u64(std::string_view s, uint64_t& out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  out = v;
  return true;
}

std::vector<std::string> split(std::string_view s, char sep) {
  std::vector<std::string> out;
  while (!s.empty()) {
    size_t p = s.find(sep);
    std::string_view w = s.substr(0, p);
    while (!w.empty() && w.front() == ' ') w.remove_prefix(1);
    while (!w.empty() && w.back() == ' ') w.remove_suffix(1);
    if (!w.empty()) out.emplace_back(w);
    if (p == s.npos) break;
    s.remove_prefix(p + 1);
  }
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
  }
  return out;
}

std::error_code protocol_error() {
  return std::make_error_code(std::errc::protocol_error);
}

}  // namespace

struct LinkSession::Impl {
  Impl(const LinkContext& c, std::unique_ptr<LinkTransport> tr, Role r,
       std::string p)
      : ctx(c),
        t(std::move(tr)),
        role(r),
        peer(std::move(p)),
        io(*t, c.options.timeout, ec, why, "line too long") {}

  // ---- state ----
  const LinkContext& ctx;
  std::unique_ptr<LinkTransport> t;
  Role role;
  std::string peer;  // the caller's target; the answerer learns it by TLS
  std::string sid;  // log prefix
  std::error_code ec;  // first failure: ends the call
  std::string why;     // what that failure was, for the log
  SmtpLineIo io;       // uses t, ec and why: declared after them
  bool tls_on = false;
  bool authenticated = false;
  bool sent_first_body = false;
  CallResult res;
  LinkSession::ProgressFn progress_fn;
  LinkProgress prog;
  uint64_t line_bps = 0;
  std::string route;

  void report(std::string_view phase) {
    if (!progress_fn) return;
    prog.phase = std::string(phase);
    prog.bytes_out = t->bytes_out() + io.unsent();
    prog.bytes_in = t->bytes_in();
    prog.messages_in = res.messages_in;
    prog.peer = peer;
    progress_fn(prog);
  }

  void fail(std::error_code e, std::string text) {
    io.fail(e, std::move(text));
  }
  void log(std::string_view text) { ferry::log::line(sid, text); }

  // ---- bytes ----

  void send(std::string_view s) { io.send(s); }

  using Reply = SmtpReply;

  // Text after "250 2.0.0 " of a one-line reply.
  static std::string reply_word_text(const Reply& r) {
    std::string s = r.texts.empty() ? std::string() : r.texts.front();
    size_t sp = s.find(' ');
    if (sp != std::string::npos && sp > 0 &&
        std::isdigit(static_cast<unsigned char>(s[0])) && s.find('.') < sp) {
      s.erase(0, sp + 1);
    }
    return s;
  }

  void reply(int code, std::string_view enhanced, std::string_view text) {
    send(smtp::format_reply(code, enhanced, text));
  }

  // ---- the call ----

  asio::awaitable<void> run() {
    auto start = std::chrono::steady_clock::now();
    auto wall_start = queue::Clock::now();
    sid = "link-" + (peer.empty() ? std::string("in") : peer);
    report("login");
    if (role == Role::caller) {
      co_await run_caller();
    } else {
      co_await run_answerer();
    }
    report("hangup");
    t->close();

    // Summary.
    res.ec = ec;
    res.peer = peer;
    if (ec && res.result == "ok") res.result = "dropped";
    if (ec) res.error = why.empty() ? ec.message() : why;
    res.bytes_in = t->bytes_in();
    res.bytes_out = t->bytes_out();
    res.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    std::string text =
        "call role=" +
        std::string(role == Role::caller ? "caller" : "answerer") +
        " peer=" + (peer.empty() ? "-" : peer) +
        " bytes_out=" + std::to_string(res.bytes_out) +
        " bytes_in=" + std::to_string(res.bytes_in) +
        " messages_out=" + std::to_string(res.messages_out) +
        " messages_in=" + std::to_string(res.messages_in) +
        " duration=" + std::to_string(res.duration.count()) +
        "ms result=" + ferry::log::quote(res.result);
    if (ec) text += " error=" + ferry::log::quote(why);
    log(text);
    if (ctx.spool != nullptr) {
      queue::CallRecord rec;
      rec.peer = peer.empty() ? "-" : peer;
      rec.start = wall_start;
      rec.end = queue::Clock::now();
      rec.bytes_out = res.bytes_out;
      rec.bytes_in = res.bytes_in;
      rec.messages_out = res.messages_out;
      rec.messages_in = res.messages_in;
      rec.result = res.result;
      rec.line_bps = line_bps;
      rec.payload_out = res.message_bytes_out;
      rec.payload_in = res.message_bytes_in;
      rec.route = route;
      if (auto e = ctx.spool->log_call(rec)) {
        log("warning: cannot record the call: " + e.message());
      }
    }
  }

  // Caller: EHLO, STARTTLS, EHLO, our batch, ATRN, their batch, QUIT.
  asio::awaitable<void> run_caller() {
    if (!co_await client_open(true)) co_return;
    if (!co_await send_batch()) co_return;

    std::vector<std::string> domains = ctx.options.atrn_domains;
    if (!domains.empty()) {
      std::string cmd = "ATRN ";
      for (size_t i = 0; i < domains.size(); ++i) {
        if (i) cmd += ',';
        cmd += domains[i];
      }
      send(cmd + "\r\n");
      Reply r;
      if (!co_await io.read_reply(r)) co_return;
      if (r.code == 250) {
        log("atrn=granted");
        // The line turns: we are the server now.
        reply(220, "", ctx.options.hostname + " ESMTP");
        co_await serve(true);
        co_return;
      }
      log("atrn=" + ferry::log::quote(r.first));
    }
    co_await client_quit();
  }

  // Answerer: greeting, then serve commands until QUIT (or ATRN turns us).
  asio::awaitable<void> run_answerer() {
    reply(220, "", ctx.options.hostname + " ESMTP");
    co_await serve(false);
  }

  asio::awaitable<void> client_quit() {
    send("QUIT\r\n");
    Reply r;
    co_await io.read_reply(r);  // the peer may hang up first; nothing is lost
    if (ec) {
      // Everything was settled before QUIT.
      ec = {};
      why.clear();
    }
  }

  // The client side's opening.  `secure`: STARTTLS and check the peer.
  asio::awaitable<bool> client_open(bool secure) {
    Reply r;
    if (!co_await io.read_reply(r)) co_return false;
    if (r.code != 220) {
      fail(protocol_error(), "greeting " + ferry::log::quote(r.first));
      co_return false;
    }
    std::vector<std::string> ext;
    if (!co_await ehlo(ext)) co_return false;
    if (secure) {
      if (ctx.tls_client == nullptr ||
          std::find(ext.begin(), ext.end(), "STARTTLS") == ext.end()) {
        res.result = "auth failed";
        fail(std::make_error_code(std::errc::permission_denied),
             "peer offers no STARTTLS");
        log("auth=failed reason=\"no STARTTLS\"");
        co_return false;
      }
      send("STARTTLS\r\n");
      if (!co_await io.read_reply(r)) co_return false;
      if (r.code != 220) {
        fail(protocol_error(), "STARTTLS " + ferry::log::quote(r.first));
        co_return false;
      }
      io.discard_input();
      std::error_code e;
      co_await t->start_tls(ctx.tls_client->context(), false, e);
      std::string who = e ? std::string() : ctx.tls_client->peer_of(t->ssl());
      if (e || who != peer) {
        res.result = "auth failed";
        fail(e ? e : std::make_error_code(std::errc::permission_denied),
             "TLS: " + (e ? e.message() : "certificate of " + who));
        log("auth=failed reason=" + ferry::log::quote(why));
        co_return false;
      }
      tls_on = true;
      log("tls=TLSv1.3 peer=" + peer);
      // In TLS 1.3 the answerer checks our certificate after our side of
      // the handshake is done: a refusal arrives as an alert on the first
      // read.  Anything failing before the EHLO reply is that refusal.
      if (!co_await ehlo(ext)) {
        // A TLS alert (category "asio.ssl") is a refusal; a drop of the
        // line (end of stream, carrier lost, truncation) is not.
        if (std::string_view(ec.category().name()) != "asio.ssl")
          co_return false;
        res.result = "auth failed";
        log("auth=failed reason=" + ferry::log::quote(
                                       "the peer refused our credentials (" +
                                       why + ")"));
        co_return false;
      }
      authenticated = true;
      log("auth=ok peer=" + peer);
    }
    if (std::find(ext.begin(), ext.end(), "XFERRY-OFFER") == ext.end()) {
      fail(protocol_error(), "peer does not offer XFERRY-OFFER");
      co_return false;
    }
    co_return true;
  }

  asio::awaitable<bool> ehlo(std::vector<std::string>& ext) {
    send("EHLO " + ctx.options.hostname + "\r\n");
    Reply r;
    if (!co_await io.read_reply(r)) co_return false;
    if (r.code != 250) {
      fail(protocol_error(), "EHLO " + ferry::log::quote(r.first));
      co_return false;
    }
    ext.clear();
    for (size_t i = 1; i < r.texts.size(); ++i) {
      ext.push_back(upper(r.texts[i].substr(0, r.texts[i].find(' '))));
    }
    co_return true;
  }

  // ---- sending our batch for the peer ----

  struct Out {
    QueueId id;
    queue::MessageInfo info;
    std::vector<uint32_t> rcpts;  // recipient indexes for this peer
    std::string stored, tid, digest;
    uint64_t from = 0;
    bool send = false;  // offered "new" or "have", or fresh
    // Never on any line before (every recipient queued, no attempt): the
    // peer cannot hold it, so it goes without an offer (saves a line of
    // each way per message before the first message byte).  A crash
    // mid-call also leaves attempts at 0; then the receiver's transfer id
    // check still refuses a second copy, and a partial it holds makes it
    // answer 451 to the MAIL, so the next call offers and resumes.
    bool fresh = false;
    bool settled = false;
    // Its last chunk went to the line: the peer may have committed it
    // even if its reply never came back.
    bool whole_sent = false;
    int mail_code = 0;
    std::string mail_reply;
    std::vector<int> rcpt_code;
    std::vector<std::string> rcpt_reply;
    std::string chunk_fail;  // first refused non-LAST chunk
    int chunk_fail_code = 0;
  };

  void settle(Out& m, int code, const std::string& text,
              const std::string& result) {
    std::vector<Transition> ts;
    bool failed = false, delivered = false;
    for (size_t k = 0; k < m.rcpts.size(); ++k) {
      int c = code;
      std::string rtext = text;
      if (m.rcpt_code.size() == m.rcpts.size() && m.rcpt_code[k] != 0 &&
          m.rcpt_code[k] / 100 != 2) {
        c = m.rcpt_code[k];
        rtext = m.rcpt_reply[k];
      }
      Transition tr;
      tr.id = m.id;
      tr.recipient = m.rcpts[k];
      tr.reply = rtext;
      if (c / 100 == 2) {
        tr.action = Action::delivered;
        delivered = true;
      } else if (c / 100 == 5) {
        tr.action = Action::failed;
        failed = true;
      } else {
        tr.action = Action::deferred;
        tr.when = queue::Clock::now();
      }
      ts.push_back(tr);
    }
    std::vector<queue::TransitionResult> out;
    std::error_code e =
        ctx.apply ? ctx.apply(ts, out) : ctx.spool->apply(ts, out);
    if (e) {
      ferry::log::line(m.id, "warning: cannot record delivery: " + e.message());
    }
    m.settled = true;
    if (delivered) {
      ++res.messages_out;
      res.message_bytes_out += m.info.size;
    }
    ++prog.messages_done;
    ferry::log::line(m.id, "peer=" + peer + " tid=" + m.tid +
                               " bytes=" + std::to_string(m.stored.size()) +
                               " result=" + result +
                               " reply=" + ferry::log::quote(text));
    if (failed && !ctx.apply && ctx.on_failed) ctx.on_failed(m.id);
  }

  // What we hold for the peer: offers, then MAIL/RCPT/BDAT pipelined.
  // Returns false when the call must end (the line dropped).
  asio::awaitable<bool> send_batch() {
    std::vector<Out> batch;
    if (!load_batch(batch)) co_return false;
    if (batch.empty()) co_return true;
    prog.messages_total = static_cast<uint32_t>(batch.size());
    prog.messages_done = 0;
    prog.payload_total = 0;
    prog.payload_done = 0;
    for (const Out& m : batch) prog.payload_total += m.stored.size();
    report("sending");

    // Offers: one round trip for the whole batch of messages the peer
    // may already hold; fresh ones go without.
    for (const Out& m : batch) {
      if (m.fresh) continue;
      send("XOFFER " + m.tid + " " + std::to_string(m.stored.size()) + " " +
           m.digest + "\r\n");
    }
    for (Out& m : batch) {
      if (m.fresh) {
        m.send = true;
        continue;
      }
      Reply r;
      if (!co_await io.read_reply(r)) co_return false;
      std::string w = reply_word_text(r);
      uint64_t n = 0;
      if (r.code == 250 && w.rfind("done ", 0) == 0) {
        settle(m, 250, r.first, "already");
      } else if (r.code == 250 && w.rfind("have ", 0) == 0 &&
                 parse_u64(w.substr(5, w.find(' ', 5) - 5), n) &&
                 n <= m.stored.size()) {
        m.from = n;
        m.send = true;
      } else if (r.code == 250) {
        m.send = true;
      } else {
        // The offer was refused: nothing of it is on the other side.
        settle(m, r.code / 100 == 5 ? r.code : 451, r.first, "refused");
      }
    }

    // In flight from here: a crash leaves them for requeue_in_flight().
    std::vector<Transition> ts;
    for (const Out& m : batch) {
      if (!m.send) continue;
      for (uint32_t k : m.rcpts) {
        Transition tr;
        tr.id = m.id;
        tr.recipient = k;
        tr.action = Action::in_flight;
        ts.push_back(tr);
      }
    }
    std::vector<queue::TransitionResult> tres;
    if (auto e = ctx.spool->apply(ts, tres)) {
      fail(e, "spool: " + e.message());
      co_return false;
    }

    bool ok = co_await pipeline(batch);

    // Whatever the drop left unsettled is deferred; the next call's offer
    // tells what really arrived.
    for (Out& m : batch) {
      if (m.send && !m.settled) {
        m.rcpt_code.clear();
        // Only a message whose last chunk went out can be whole at the
        // peer; the rest can go elsewhere (failover) without a duplicate.
        settle(m, 451,
               std::string(m.whole_sent ? kLinkLostReply : kLinkCutReply),
               "deferred");
      }
    }
    co_return ok;
  }

  bool load_batch(std::vector<Out>& batch) {
    std::vector<QueueId> ids;
    if (auto e = ctx.spool->route_messages(peer, ids)) {
      fail(e, "spool: " + e.message());
      return false;
    }
    for (const QueueId& id : ids) {
      Out m;
      m.id = id;
      if (ctx.spool->get(id, m.info)) continue;  // left meanwhile
      m.fresh = true;
      for (const auto& r : m.info.recipients) {
        if (r.route == peer && (r.state == RecipientState::queued ||
                                r.state == RecipientState::deferred)) {
          m.rcpts.push_back(r.index);
          if (r.state != RecipientState::queued || r.attempts > 0)
            m.fresh = false;
        }
      }
      if (m.rcpts.empty()) continue;
      if (auto e = ctx.spool->read_stored_body(id, m.stored)) {
        ferry::log::line(id, "warning: cannot read body: " + e.message());
        continue;
      }
      if (auto e = ctx.spool->transfer_id_for(id, peer, m.tid)) {
        ferry::log::line(id, "warning: no transfer id: " + e.message());
        continue;
      }
      m.digest = digest_b64url(m.stored);
      batch.push_back(std::move(m));
    }
    return true;
  }

  struct Expect {
    enum Kind { mail, rcpt, chunk, last } kind;
    size_t msg;
    size_t index = 0;  // recipient, for rcpt
  };

  asio::awaitable<bool> pipeline(std::vector<Out>& batch) {
    std::deque<Expect> expects;
    size_t chunks_out = 0;
    const size_t chunk = std::max<size_t>(1, ctx.options.chunk_size);
    const size_t window = std::max<size_t>(1, ctx.options.window_chunks);

    for (size_t i = 0; i < batch.size(); ++i) {
      Out& m = batch[i];
      if (!m.send) continue;

      // Envelope.
      std::string mail = "MAIL FROM:<" + m.info.sender +
                         "> SIZE=" + std::to_string(m.info.size) +
                         " BODY=8BITMIME";
      bool utf8 = !ascii_only(m.info.sender);
      for (uint32_t k : m.rcpts) {
        if (!ascii_only(m.info.recipients[k].address)) utf8 = true;
      }
      if (utf8) mail += " SMTPUTF8";
      if (m.info.ret == queue::Ret::full) mail += " RET=FULL";
      if (m.info.ret == queue::Ret::hdrs) mail += " RET=HDRS";
      if (!m.info.envid.empty()) mail += " ENVID=" + smtp::xtext_encode(m.info.envid);
      mail += " XTID=" + m.tid + " XBODY=ZSTD";
      if (m.from > 0) mail += " XFROM=" + std::to_string(m.from);
      send(mail + "\r\n");
      expects.push_back({Expect::mail, i});
      m.rcpt_code.assign(m.rcpts.size(), 0);
      m.rcpt_reply.assign(m.rcpts.size(), std::string());
      for (size_t k = 0; k < m.rcpts.size(); ++k) {
        const auto& r = m.info.recipients[m.rcpts[k]];
        std::string rc = "RCPT TO:<" + r.address + ">";
        if (r.notify) rc += " NOTIFY=" + smtp::format_notify(r.notify);
        if (!r.orcpt.empty()) rc += " ORCPT=" + r.orcpt;
        send(rc + "\r\n");
        expects.push_back({Expect::rcpt, i, k});
      }

      // Body: stored bytes from what the peer holds, in chunks.
      uint64_t off = m.from;
      bool last = false;
      do {
        uint64_t n = std::min<uint64_t>(chunk, m.stored.size() - off);
        last = off + n == m.stored.size();
        while (chunks_out >= window) {
          if (!co_await handle_reply(batch, expects, chunks_out)) {
            co_return false;
          }
        }
        send("BDAT " + std::to_string(n) + (last ? " LAST" : "") + "\r\n");
        if (!sent_first_body) {
          if (!co_await io.flush()) co_return false;
          sent_first_body = true;
          res.overhead_out = t->bytes_out();
          res.overhead_in = t->bytes_in();
        }
        send(std::string_view(m.stored).substr(off, n));
        if (last) m.whole_sent = true;
        res.body_bytes_out += n;
        prog.payload_done += n;
        report("sending");
        ++chunks_out;
        expects.push_back({last ? Expect::last : Expect::chunk, i});
        off += n;
        if (io.unsent() >= chunk) {
          if (!co_await io.flush()) co_return false;
        }
      } while (!last);
    }
    while (!expects.empty()) {
      if (!co_await handle_reply(batch, expects, chunks_out)) co_return false;
    }
    co_return true;
  }

  asio::awaitable<bool> handle_reply(std::vector<Out>& batch,
                                     std::deque<Expect>& expects,
                                     size_t& chunks_out) {
    Reply r;
    if (!co_await io.read_reply(r)) co_return false;
    Expect e = expects.front();
    expects.pop_front();
    Out& m = batch[e.msg];
    switch (e.kind) {
      case Expect::mail:
        m.mail_code = r.code;
        m.mail_reply = r.first;
        break;
      case Expect::rcpt:
        m.rcpt_code[e.index] = r.code;
        m.rcpt_reply[e.index] = r.first;
        break;
      case Expect::chunk:
        --chunks_out;
        if (r.code != 250 && m.chunk_fail_code == 0) {
          m.chunk_fail_code = r.code;
          m.chunk_fail = r.first;
        }
        break;
      case Expect::last:
        --chunks_out;
        if (m.mail_code / 100 != 2) {
          m.rcpt_code.clear();
          settle(m, m.mail_code, m.mail_reply, "refused");
        } else if (m.chunk_fail_code != 0) {
          settle(m, m.chunk_fail_code, m.chunk_fail, "refused");
        } else {
          settle(m, r.code, r.first, r.code == 250 ? "sent" : "refused");
        }
        break;
    }
    co_return true;
  }

  // ---- serving: receiving the peer's mail ----

  struct InRcpt {
    std::string address, orcpt;
    uint8_t notify = 0;
    std::string route;                 // "local" or a route name
    std::vector<std::string> users;    // local: Maildirs to deliver to
    std::vector<std::string> forward;  // local: alias targets elsewhere
  };

  struct Incoming {
    bool active = false;
    std::string sender, envid, tid;
    queue::Ret ret = queue::Ret::unspecified;
    uint64_t size = 0;
    bool zstd = false;
    uint64_t offset = 0;  // stored bytes held (partial) or buffered
    std::string body;     // without a transfer id: the chunks so far
    std::vector<InRcpt> rcpts;
    int broken_code = 0;  // a chunk failed: refuse the rest of the body
    std::string broken_text;
  };

  struct Offer {
    uint64_t size = 0;
    std::string digest;
  };

  Incoming in;
  std::map<std::string, Offer> offers;

  void reset_txn() { in = Incoming{}; }

  std::string ext_list() const {
    std::string h = ctx.options.hostname;
    if (!tls_on) return h + "\nPIPELINING\nSTARTTLS\nXFERRY 1";
    return h + "\nPIPELINING\nCHUNKING\n8BITMIME\nSMTPUTF8\nSIZE " +
           std::to_string(ctx.options.max_message_size) +
           "\nDSN\nENHANCEDSTATUSCODES\n" +
           (role == Role::answerer ? "ATRN\n" : "") +
           "XFERRY-OFFER\nXFERRY-ZSTD";
  }

  // Serves commands until QUIT or a failure.  `turned`: we are the caller
  // after ATRN (already authenticated, no ATRN back).
  asio::awaitable<void> serve(bool turned) {
    for (;;) {
      std::string line;
      if (!co_await io.read_line(line)) co_return;
      smtp::ParsedCommand pc = smtp::parse_command(line);
      const smtp::Command& c = pc.cmd;
      std::string name = c.name;

      if (c.verb == smtp::Verb::ehlo || c.verb == smtp::Verb::helo) {
        reset_txn();
        if (c.verb == smtp::Verb::ehlo) {
          reply(250, "", ext_list());
        } else {
          reply(250, "", ctx.options.hostname);
        }
        continue;
      }
      if (c.verb == smtp::Verb::quit) {
        reply(221, "2.0.0", "bye");
        co_await io.flush();
        co_return;
      }
      if (c.verb == smtp::Verb::noop) {
        reply(250, "2.0.0", "ok");
        continue;
      }
      if (c.verb == smtp::Verb::rset) {
        reset_txn();
        reply(250, "2.0.0", "ok");
        continue;
      }
      if (c.verb == smtp::Verb::starttls) {
        if (tls_on || turned) {
          reply(503, "5.5.1", "TLS already active");
          continue;
        }
        if (ctx.tls_server == nullptr) {
          reply(454, "4.7.0", "TLS not available");
          continue;
        }
        reply(220, "2.0.0", "ready");
        if (!co_await io.flush()) co_return;
        io.discard_input();  // nothing sent before the handshake may count
        std::error_code e;
        co_await t->start_tls(ctx.tls_server->context(), true, e);
        std::string who = e ? std::string() : ctx.tls_server->peer_of(t->ssl());
        if (e || who.empty()) {
          res.result = "auth failed";
          fail(e ? e : std::make_error_code(std::errc::permission_denied),
               "TLS: " + (e ? e.message() : std::string("unknown cert")));
          log("auth=failed reason=" + ferry::log::quote(why));
          co_return;
        }
        tls_on = true;
        authenticated = true;
        peer = who;
        report("login");
        sid = "link-" + peer;
        log("tls=TLSv1.3 auth=ok peer=" + peer);
        reset_txn();
        continue;
      }
      if (!authenticated) {
        // A stranger learns nothing: not even whether a command exists.
        if (c.verb == smtp::Verb::bdat) {
          // Its data would be read as commands; end the conversation.
          reply(530, "5.7.0", "must issue a STARTTLS command first");
          co_await io.flush();
          fail(protocol_error(), "BDAT before authentication");
          co_return;
        }
        reply(530, "5.7.0", "must issue a STARTTLS command first");
        continue;
      }

      if (name == "XOFFER") {
        cmd_xoffer(c.arg);
      } else if (c.verb == smtp::Verb::mail) {
        cmd_mail(pc);
      } else if (c.verb == smtp::Verb::rcpt) {
        cmd_rcpt(pc);
      } else if (c.verb == smtp::Verb::bdat) {
        std::optional<smtp::BdatArgs> a = smtp::parse_bdat(c.arg);
        if (!a ||
            a->size > ctx.options.max_message_size + ctx.options.chunk_size) {
          // The chunk's end cannot be trusted: no next command to find.
          reply(a ? 552 : 501, a ? "5.3.4" : "5.5.4",
                a ? "chunk too big" : "BDAT size [LAST]");
          fail(protocol_error(), "bad BDAT " + ferry::log::quote(c.arg));
          co_await io.flush();
          co_return;
        }
        // (A plain loop here: g++ 12 miscompiled a nested read coroutine.)
        bool more = true;
        for (;;) {
          if (io.buffered() >= a->size) break;
          more = co_await io.fill();
          if (!more) break;
        }
        if (!more) co_return;
        cmd_bdat(&*a, io.take(a->size));
      } else if (c.verb == smtp::Verb::data) {
        reply(502, "5.5.1", "use BDAT");
      } else if (name == "ATRN") {
        if (turned || role != Role::answerer) {
          reply(503, "5.5.1", "ATRN not allowed now");
          continue;
        }
        if (!co_await cmd_atrn(c.arg)) continue;
        co_return;  // the turned part of the call has run
      } else {
        reply(500, "5.5.2", "command not recognised");
      }
    }
  }

  void cmd_xoffer(const std::string& arg) {
    std::vector<std::string> w = split(arg, ' ');
    uint64_t size = 0;
    if (w.size() != 3 || !valid_tid(w[0]) || !parse_u64(w[1], size)) {
      reply(501, "5.5.4", "XOFFER tid size digest");
      return;
    }
    QueueId qid;
    if (!ctx.spool->lookup_received(peer, w[0], qid)) {
      reply(250, "2.0.0", "done " + qid);
      return;
    }
    offers[w[0]] = Offer{size, w[2]};
    uint64_t held = 0;
    std::error_code e = ctx.spool->partial_size(peer, w[0], held);
    if (!e && held > size) {
      ctx.spool->partial_drop(peer, w[0]);
      held = 0;
    }
    if (!e && held > 0) {
      reply(250, "2.0.0", "have " + std::to_string(held));
    } else {
      reply(250, "2.0.0", "new");
    }
  }

  void cmd_mail(const smtp::ParsedCommand& pc) {
    if (in.active) {
      reply(503, "5.5.1", "nested MAIL");
      return;
    }
    PathParse p = parse_path(pc.cmd.arg);
    if (!pc.from_to_ok || !p.ok) {
      reply(501, "5.1.7", "bad sender address");
      return;
    }
    smtp::Params params;
    std::string err;
    if (!smtp::parse_params(p.rest, params, err)) {
      reply(501, "5.5.4", err);
      return;
    }
    Incoming m;
    m.sender = p.null_path ? std::string() : p.box.str();
    uint64_t xfrom = 0;
    for (const auto& [k, v] : params) {
      if (k == "SIZE") {
        parse_u64(v, m.size);
      } else if (k == "RET") {
        std::string u = upper(v);
        m.ret = u == "FULL"   ? queue::Ret::full
                : u == "HDRS" ? queue::Ret::hdrs
                              : queue::Ret::unspecified;
      } else if (k == "ENVID") {
        m.envid = smtp::xtext_decode(v);
      } else if (k == "XTID") {
        m.tid = v;
      } else if (k == "XBODY") {
        m.zstd = upper(v) == "ZSTD";
      } else if (k == "XFROM") {
        parse_u64(v, xfrom);
      }
    }
    if (m.size > ctx.options.max_message_size) {
      reply(552, "5.3.4", "message too big");
      return;
    }
    if (!m.tid.empty()) {
      if (!valid_tid(m.tid)) {
        reply(501, "5.5.4", "bad XTID");
        return;
      }
      uint64_t held = 0;
      ctx.spool->partial_size(peer, m.tid, held);
      if (held != xfrom) {
        reply(451, "4.3.0",
              "resume offset " + std::to_string(xfrom) + " but holding " +
                  std::to_string(held));
        return;
      }
      m.offset = held;
    } else if (xfrom != 0) {
      reply(501, "5.5.4", "XFROM needs XTID");
      return;
    }
    m.active = true;
    in = std::move(m);
    reply(250, "2.1.0", "ok");
  }

  void cmd_rcpt(const smtp::ParsedCommand& pc) {
    if (!in.active) {
      reply(503, "5.5.1", "need MAIL first");
      return;
    }
    PathParse p = parse_path(pc.cmd.arg);
    if (!pc.from_to_ok || !p.ok || p.null_path || p.box.domain.empty()) {
      reply(501, "5.1.3", "bad recipient address");
      return;
    }
    smtp::Params params;
    std::string err;
    if (!smtp::parse_params(p.rest, params, err)) {
      reply(501, "5.5.4", err);
      return;
    }
    InRcpt r;
    r.address = p.box.str();
    for (const auto& [k, v] : params) {
      if (k == "NOTIFY") {
        auto bits = smtp::parse_notify(v);
        if (!bits) {
          reply(501, "5.5.4", "bad NOTIFY");
          return;
        }
        r.notify = *bits;
      } else if (k == "ORCPT") {
        r.orcpt = v;
      }
    }
    std::string domain = lower_ascii(p.box.domain);
    if (ctx.router->is_local(domain)) {
      r.route = std::string(kLocalRoute);
      std::vector<std::string> targets;
      if (ctx.users != nullptr) targets = ctx.users->expand(p.box.local);
      for (auto& x : targets) {
        (x.find('@') == std::string::npos ? r.users : r.forward)
            .push_back(std::move(x));
      }
    } else {
      r.route = ctx.router->route_for(domain);
      if (r.route.empty()) {
        reply(550, "5.1.2", "no route to " + domain);
        return;
      }
      if (r.route == peer) {
        reply(550, "5.4.6", "routing loop: " + domain + " is served by you");
        return;
      }
    }
    in.rcpts.push_back(std::move(r));
    reply(250, "2.1.5", "ok");
  }

  // BDAT's chunk, read in full by serve() (RFC 3030: the data is read
  // whatever the reply will be).
  void cmd_bdat(const smtp::BdatArgs* a, std::string bytes) {
    res.body_bytes_in += bytes.size();
    if (!in.active || in.rcpts.empty()) {
      reply(503, "5.5.1", "need MAIL and RCPT first");
      if (a->last) reset_txn();
      return;
    }
    if (in.broken_code != 0) {
      reply(in.broken_code, in.broken_code / 100 == 5 ? "5.3.0" : "4.3.0",
            in.broken_text);
      if (a->last) reset_txn();
      return;
    }
    if (in.offset + bytes.size() >
        ctx.options.max_message_size + ctx.options.chunk_size) {
      in.broken_code = 552;
      in.broken_text = "message too big";
      reply(552, "5.3.4", in.broken_text);
      if (a->last) reset_txn();
      return;
    }

    if (!a->last) {
      if (!in.tid.empty()) {
        if (auto e =
                ctx.spool->partial_append(peer, in.tid, in.offset, bytes)) {
          in.broken_code = 451;
          in.broken_text = "cannot hold the chunk: " + e.message();
          reply(451, "4.3.0", in.broken_text);
          return;
        }
      } else {
        in.body += bytes;
      }
      in.offset += bytes.size();
      reply(250, "2.0.0", std::to_string(in.offset) + " held");
      return;
    }

    // LAST: assemble, verify, decompress, store, deliver.
    std::string whole;
    if (!in.tid.empty() && in.offset > 0) {
      if (auto e = ctx.spool->partial_get(peer, in.tid, whole)) {
        reply(451, "4.3.0", "cannot read the held part: " + e.message());
        reset_txn();
        return;
      }
    } else if (in.tid.empty()) {
      whole = std::move(in.body);
    }
    whole += bytes;
    accept_message(std::move(whole));
    reset_txn();
    return;
  }

  void accept_message(std::string stored) {
    const std::string tid = in.tid;
    std::string tag = "peer=" + peer + " tid=" + (tid.empty() ? "-" : tid) +
                      " bytes=" + std::to_string(stored.size());

    // Verify against the offer.
    auto of = tid.empty() ? offers.end() : offers.find(tid);
    if (of != offers.end() && (of->second.size != stored.size() ||
                               of->second.digest != digest_b64url(stored))) {
      ctx.spool->partial_drop(peer, tid);
      ferry::log::line("NOQUEUE", tag + " result=refused reason=digest");
      reply(554, "5.6.0", "body does not match its digest; send it again");
      return;
    }

    // The body as the sender's client sent it.
    std::string body;
    if (in.zstd) {
      unsigned long long n =
          ZSTD_getFrameContentSize(stored.data(), stored.size());
      if (n == ZSTD_CONTENTSIZE_ERROR || n == ZSTD_CONTENTSIZE_UNKNOWN ||
          n > ctx.options.max_message_size) {
        if (!tid.empty()) ctx.spool->partial_drop(peer, tid);
        reply(554, "5.6.0", "bad compressed body");
        return;
      }
      body.resize(n);
      size_t got = ZSTD_decompress(body.data(), body.size(), stored.data(),
                                   stored.size());
      if (ZSTD_isError(got) || got != n) {
        if (!tid.empty()) ctx.spool->partial_drop(peer, tid);
        reply(554, "5.6.0", "bad compressed body");
        return;
      }
    } else {
      body = std::move(stored);
    }

    // Commit the message and its transfer id together.
    queue::NewMessage nm;
    nm.sender = in.sender;
    nm.envid = in.envid;
    nm.ret = in.ret;
    nm.body = body;
    nm.received_transfer_id = tid;
    nm.received_from_peer = tid.empty() ? std::string() : peer;
    struct Local {
      size_t index;
      const InRcpt* r;
    };
    std::vector<Local> locals;
    for (const InRcpt& r : in.rcpts) {
      if (r.route == kLocalRoute) {
        locals.push_back({nm.recipients.size(), &r});
      }
      nm.recipients.push_back({r.address, r.orcpt, r.notify, r.route});
      for (const std::string& f : r.forward) {
        size_t at = f.rfind('@');
        std::string route = ctx.router->route_for(f.substr(at + 1));
        if (route.empty() || route == kLocalRoute) continue;
        std::string orcpt = r.orcpt.empty() ? "rfc822;" + r.address : r.orcpt;
        nm.recipients.push_back({f, orcpt, r.notify, route});
      }
    }
    QueueId qid;
    std::error_code e = ctx.spool->submit(std::move(nm), qid);
    if (e == queue::spool_errc::bad_state && !qid.empty()) {
      ferry::log::line(qid, tag + " result=already");
      reply(250, "2.0.0", qid + " accepted");
      return;
    }
    if (e) {
      ferry::log::line("NOQUEUE", tag + " result=deferred reason=" +
                                      ferry::log::quote(e.message()));
      reply(451, "4.3.0", "cannot store the message: " + e.message());
      return;
    }
    ++res.messages_in;
    res.message_bytes_in += in.size;
    report("receiving");
    ferry::log::line(qid, tag + " result=received");

    // Local delivery: idempotent Maildir names from the queue id.
    std::vector<Transition> ts;
    bool failed = false;
    for (const Local& l : locals) {
      Transition tr;
      tr.id = qid;
      tr.recipient = static_cast<uint32_t>(l.index);
      if (l.r->users.empty() && l.r->forward.empty()) {
        tr.action = Action::failed;
        tr.reply = "550 5.1.1 <" + l.r->address + ">: no such user";
        failed = true;
      } else {
        std::string err;
        for (const std::string& u : l.r->users) {
          if (maildir_deliver(ctx.mail_root + "/" + u,
                              maildir_unique_name(qid, u), body, err)) {
            break;
          }
          err.clear();
        }
        if (err.empty()) {
          tr.action = Action::delivered;
          tr.reply = "250 2.0.0 delivered to maildir";
        } else {
          tr.action = Action::deferred;
          tr.reply = "451 4.3.0 " + err;
          tr.when = queue::Clock::now() + std::chrono::minutes(5);
        }
      }
      ferry::log::line(qid, "to=<" + l.r->address + "> relay=local result=" +
                                std::string(queue::to_string(tr.action)) +
                                " reply=" + ferry::log::quote(tr.reply));
      ts.push_back(std::move(tr));
    }
    if (!ts.empty()) {
      std::vector<queue::TransitionResult> out;
      if (auto te = ctx.spool->apply(ts, out)) {
        ferry::log::line(qid,
                         "warning: cannot record delivery: " + te.message());
      }
    }
    reply(250, "2.0.0", qid + " accepted");
    if (failed && ctx.on_failed) ctx.on_failed(qid);
  }

  // ATRN: returns true when the line turned (and the turned part ran).
  asio::awaitable<bool> cmd_atrn(const std::string& arg) {
    std::vector<std::string> domains = split(arg, ',');
    for (const std::string& d : domains) {
      if (!ctx.router->peer_serves(peer, d)) {
        reply(550, "5.7.1", "not authorised for " + d);
        co_return false;
      }
    }
    std::vector<QueueId> ids;
    ctx.spool->route_messages(peer, ids);
    if (ids.empty()) {
      reply(453, "4.3.0", "no mail");
      co_return false;
    }
    reply(250, "2.0.0", "turning the line round");
    log("atrn=granted");
    reset_txn();
    if (!co_await client_open(false)) co_return true;
    if (!co_await send_batch()) co_return true;
    co_await client_quit();
    co_return true;
  }
};

LinkSession::LinkSession(const LinkContext& ctx,
                         std::unique_ptr<LinkTransport> t, Role role,
                         std::string peer)
    : impl_(std::make_unique<Impl>(ctx, std::move(t), role, std::move(peer))) {}

LinkSession::~LinkSession() = default;

void LinkSession::set_progress(ProgressFn fn) {
  impl_->progress_fn = std::move(fn);
}
void LinkSession::set_line_bps(uint64_t bps) { impl_->line_bps = bps; }
void LinkSession::set_route(std::string route) {
  impl_->route = std::move(route);
}

asio::awaitable<CallResult> LinkSession::run() {
  co_await impl_->run();
  co_return impl_->res;
}

}  // namespace ferry::gw
