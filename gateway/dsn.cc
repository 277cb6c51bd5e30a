#include "gateway/dsn.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>

#include "gateway/smtp_parser.h"

namespace ferry::gw {
namespace {

constexpr std::string_view kCrlf = "\r\n";

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

bool istarts(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() &&
         iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
    s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
    s.remove_suffix(1);
  return s;
}

// A reply or reason on one header line: line breaks become spaces and
// control bytes are dropped, so a far side cannot inject fields.
std::string one_line(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '\r') continue;
    if (c == '\n' || c == '\t') {
      if (!out.empty() && out.back() != ' ') out += ' ';
      continue;
    }
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) continue;
    out += c;
  }
  return std::string(trim(out));
}

std::string_view action_of(DsnKind k) {
  switch (k) {
    case DsnKind::failure:
      return "failed";
    case DsnKind::delay:
      return "delayed";
    case DsnKind::success:
      return "delivered";
  }
  return "failed";
}

std::string_view default_status(DsnKind k) {
  switch (k) {
    case DsnKind::failure:
      return "5.0.0";
    case DsnKind::delay:
      return "4.0.0";
    case DsnKind::success:
      return "2.0.0";
  }
  return "5.0.0";
}

// The header block of a message, ending with its last CRLF.
std::string header_block(std::string_view msg) {
  size_t end = msg.find("\r\n\r\n");
  if (end != std::string_view::npos) return std::string(msg.substr(0, end + 2));
  end = msg.find("\n\n");
  if (end != std::string_view::npos) return std::string(msg.substr(0, end + 1));
  std::string all(msg);
  if (all.empty() || all.back() != '\n') all += kCrlf;
  return all;
}

bool has_8bit(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    return static_cast<unsigned char>(c) >= 0x80;
  });
}

std::string reporting_host(const DsnRequest& req) {
  return req.reporting_mta.empty() ? "localhost" : req.reporting_mta;
}

// The notification text a person reads: what happened and what to do.
std::string human_text(const DsnRequest& req,
                       const std::vector<const DsnRecipient*>& rcpts) {
  std::string t;
  auto line = [&](std::string_view s) {
    t += s;
    t += kCrlf;
  };
  line("This is the ferry mail gateway at " + reporting_host(req) + ".");
  line("");
  std::string when = rfc5322_date(req.arrival);
  switch (req.kind) {
    case DsnKind::failure:
      line("I am sorry: your message of " + when);
      line("could not be delivered to the recipients below, and I have given");
      line("up trying.  The reason for each is given with it.  The message");
      line("(or its header) is attached.");
      break;
    case DsnKind::delay:
      line("Your message of " + when);
      line("has not yet been delivered to the recipients below.  It is still");
      line("queued and will be tried again; you do not need to send it again.");
      break;
    case DsnKind::success:
      line("Your message of " + when);
      line("was delivered to the recipients below, as you asked to be told.");
      break;
  }
  line("");
  for (const DsnRecipient* r : rcpts) {
    line("  <" + one_line(r->address) + ">");
    if (!r->reason.empty()) line("    " + one_line(r->reason));
    if (!r->diagnostic.empty())
      line("    The other side said: " + one_line(r->diagnostic));
  }
  if (req.kind == DsnKind::delay) {
    line("");
    if (req.next_attempt)
      line("The next attempt is planned for " +
           rfc5322_date(*req.next_attempt) + ".");
    if (req.retry_until)
      line("If it cannot be delivered by " + rfc5322_date(*req.retry_until) +
           ", it will be returned to you.");
  }
  if (!req.queue_id.empty()) {
    line("");
    line("(Queue id " + req.queue_id + ", for your postmaster.)");
  }
  return t;
}

// "smtp" for an SMTP reply; a modem result or our own words get a private
// type (RFC 3464 2.3.6 allows X- types).
std::string diagnostic_type(std::string_view d) {
  bool smtp = d.size() >= 3 && std::isdigit(static_cast<unsigned char>(d[0])) &&
              std::isdigit(static_cast<unsigned char>(d[1])) &&
              std::isdigit(static_cast<unsigned char>(d[2])) &&
              (d.size() == 3 || d[3] == ' ' || d[3] == '-');
  return smtp ? "smtp" : "x-ferry";
}

std::string build(const DsnRequest& req,
                  const std::vector<const DsnRecipient*>& rcpts,
                  const std::string& to, bool headers_only) {
  std::string host = reporting_host(req);
  std::string from =
      req.postmaster.empty() ? "MAILER-DAEMON@" + host : req.postmaster;

  // A boundary that cannot occur in what we enclose.
  std::string boundary;
  for (int n = 0;; ++n) {
    boundary = "=_ferry_" + req.queue_id + "_" +
               std::string(to_string(req.kind)) + "_" + std::to_string(n);
    if (req.original.find(boundary) == std::string::npos) break;
  }

  std::string subject;
  switch (req.kind) {
    case DsnKind::failure:
      subject = "Delivery failed: returning message to sender";
      break;
    case DsnKind::delay:
      subject = "Delivery delayed: message still queued";
      break;
    case DsnKind::success:
      subject = "Delivery report: message delivered";
      break;
  }
  std::string m;
  auto h = [&](std::string_view s) {
    m += s;
    m += kCrlf;
  };
  int64_t stamp = std::chrono::duration_cast<std::chrono::seconds>(
                      req.now.time_since_epoch())
                      .count();

  // Message header.
  h("From: Mail Delivery System <" + from + ">");
  h("To: <" + to + ">");
  h("Subject: " + subject);
  h("Date: " + rfc5322_date(req.now));
  h("Message-ID: <" + (req.queue_id.empty() ? "dsn" : req.queue_id) + "." +
    std::string(to_string(req.kind)) + "." + std::to_string(stamp) + "@" +
    host + ">");
  h("Auto-Submitted: auto-replied");
  h("MIME-Version: 1.0");
  h("Content-Type: multipart/report; report-type=delivery-status;");
  h("\tboundary=\"" + boundary + "\"");
  h("");
  h("This is a MIME-encapsulated delivery status notification.");
  h("");

  // Part 1: for people.
  h("--" + boundary);
  h("Content-Type: text/plain; charset=us-ascii");
  h("Content-Description: Notification");
  h("");
  m += human_text(req, rcpts);
  h("");

  // Part 2: for programs (RFC 3464 section 2).
  h("--" + boundary);
  h("Content-Type: message/delivery-status");
  h("Content-Description: Delivery report");
  h("");
  h("Reporting-MTA: dns; " + host);
  if (!req.envid.empty())
    h("Original-Envelope-Id: " + one_line(smtp::xtext_decode(req.envid)));
  h("Arrival-Date: " + rfc5322_date(req.arrival));
  for (const DsnRecipient* r : rcpts) {
    h("");
    if (!r->orcpt.empty()) {
      std::string o = smtp::xtext_decode(r->orcpt);
      size_t semi = o.find(';');
      if (semi != std::string::npos)
        h("Original-Recipient: " + one_line(o.substr(0, semi)) + ";" +
          one_line(o.substr(semi + 1)));
      else
        h("Original-Recipient: rfc822;" + one_line(o));
    }
    h("Final-Recipient: rfc822; " + one_line(r->address));
    h("Action: " + std::string(action_of(req.kind)));
    h("Status: " + (r->status.empty() ? std::string(default_status(req.kind))
                                      : one_line(r->status)));
    if (!r->remote_mta.empty())
      h("Remote-MTA: dns; " + one_line(r->remote_mta));
    if (!r->diagnostic.empty())
      h("Diagnostic-Code: " + diagnostic_type(r->diagnostic) + "; " +
        one_line(r->diagnostic));
    if (r->last_attempt)
      h("Last-Attempt-Date: " + rfc5322_date(*r->last_attempt));
    if (req.kind == DsnKind::delay && req.retry_until)
      h("Will-Retry-Until: " + rfc5322_date(*req.retry_until));
  }
  h("");

  // Part 3: what was sent.
  h("--" + boundary);
  if (headers_only) {
    std::string hdrs = header_block(req.original);
    h("Content-Type: text/rfc822-headers");
    if (has_8bit(hdrs)) h("Content-Transfer-Encoding: 8bit");
    h("Content-Description: Header of the original message");
    h("");
    m += hdrs;
  } else {
    h("Content-Type: message/rfc822");
    if (has_8bit(req.original)) h("Content-Transfer-Encoding: 8bit");
    h("Content-Description: The original message");
    h("");
    m += req.original;
    if (m.empty() || m.back() != '\n') m += kCrlf;
  }
  h("");
  h("--" + boundary + "--");
  return m;
}

}  // namespace

std::string_view to_string(DsnKind k) {
  switch (k) {
    case DsnKind::failure:
      return "failure";
    case DsnKind::delay:
      return "delay";
    case DsnKind::success:
      return "success";
  }
  return "failure";
}

std::string rfc5322_date(SysTime t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed",
                                          "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr",
                                            "May", "Jun", "Jul", "Aug",
                                            "Sep", "Oct", "Nov", "Dec"};
  std::time_t tt = SysClock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                kDays[tm.tm_wday], tm.tm_mday, kMonths[tm.tm_mon],
                tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::optional<PostmasterCopy> parse_postmaster_copy(std::string_view s) {
  if (iequals(s, "none")) return PostmasterCopy::none;
  if (iequals(s, "failures")) return PostmasterCopy::failures;
  if (iequals(s, "all")) return PostmasterCopy::all;
  return std::nullopt;
}

std::string enhanced_status(std::string_view reply) {
  // "550 5.1.1 text" or "550-5.1.1 text": the code after the reply code.
  if (reply.size() < 9) return "";
  std::string_view rest = reply.substr(4);
  size_t end = rest.find(' ');
  std::string_view code = rest.substr(0, end);
  int dots = 0;
  for (char c : code) {
    if (c == '.')
      ++dots;
    else if (!std::isdigit(static_cast<unsigned char>(c)))
      return "";
  }
  if (dots != 2 || code.front() < '2' || code.front() > '5' ||
      code.front() != reply.front() || code.find("..") != std::string::npos ||
      code.back() == '.')
    return "";
  return std::string(code);
}

DsnRequest dsn_request_from(const queue::MessageInfo& m, std::string body,
                            const std::vector<uint32_t>& which, DsnKind kind) {
  DsnRequest r;
  r.kind = kind;
  r.sender = m.sender;
  r.envid = m.envid;
  r.ret = m.ret;
  r.arrival = m.arrival;
  r.queue_id = m.id;
  r.original = std::move(body);
  for (uint32_t i : which) {
    auto it = std::find_if(
        m.recipients.begin(), m.recipients.end(),
        [&](const queue::RecipientInfo& ri) { return ri.index == i; });
    if (it == m.recipients.end()) continue;
    DsnRecipient d;
    d.address = it->address;
    d.orcpt = it->orcpt;
    d.notify = it->notify;
    d.diagnostic = it->last_reply;
    d.status = enhanced_status(it->last_reply);
    if (it->next_attempt != SysTime{} && kind == DsnKind::delay)
      r.next_attempt = it->next_attempt;
    r.recipients.push_back(std::move(d));
  }
  return r;
}

std::vector<const DsnRecipient*> notified_recipients(const DsnRequest& req) {
  std::vector<const DsnRecipient*> out;
  for (const DsnRecipient& r : req.recipients) {
    if (r.notify & queue::notify_never) continue;
    bool want = false;
    switch (req.kind) {
      case DsnKind::success:
        want = r.notify & queue::notify_success;
        break;
      case DsnKind::failure:
        want = r.notify == 0 || (r.notify & queue::notify_failure);
        break;
      case DsnKind::delay:
        want = r.notify == 0 || (r.notify & queue::notify_delay);
        break;
    }
    if (want) out.push_back(&r);
  }
  return out;
}

std::vector<DsnMail> make_dsn(const DsnRequest& req) {
  std::vector<DsnMail> out;
  // Never answer a notification (or anything else from <>): that is how
  // mail loops between two gateways are avoided (RFC 5321 4.5.5).
  if (req.sender.empty()) return out;

  bool headers_only;
  switch (req.ret) {
    case queue::Ret::hdrs:
      headers_only = true;
      break;
    case queue::Ret::full:
      headers_only = false;
      break;
    default:
      headers_only = req.kind != DsnKind::failure ||
                     req.original.size() > req.return_limit;
  }

  std::vector<const DsnRecipient*> rcpts = notified_recipients(req);
  if (!rcpts.empty())
    out.push_back(
        {"", {req.sender}, build(req, rcpts, req.sender, headers_only)});

  // The postmaster's copy lists every recipient whatever NOTIFY said, and
  // carries only the header: the postmaster needs the facts, not the
  // correspondence.
  bool copy = req.postmaster_copy == PostmasterCopy::all ||
              (req.postmaster_copy == PostmasterCopy::failures &&
               req.kind == DsnKind::failure);
  if (copy && !req.postmaster.empty() && !req.recipients.empty()) {
    std::vector<const DsnRecipient*> all;
    for (const DsnRecipient& r : req.recipients) all.push_back(&r);
    out.push_back(
        {"", {req.postmaster}, build(req, all, req.postmaster, true)});
  }
  return out;
}

// ---- Parsing ----

std::string DsnFields::get(std::string_view name) const {
  for (auto& [k, v] : fields)
    if (iequals(k, name)) return v;
  return "";
}

bool DsnFields::has(std::string_view name) const {
  for (auto& [k, v] : fields)
    if (iequals(k, name)) return true;
  return false;
}

namespace {

std::vector<std::string_view> lines_of(std::string_view s) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t nl = s.find('\n', start);
    size_t end = nl == std::string_view::npos ? s.size() : nl;
    std::string_view l = s.substr(start, end - start);
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    out.push_back(l);
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
  return out;
}

// Header fields from `lines` (unfolding continuation lines).
DsnFields parse_fields(const std::vector<std::string_view>& lines) {
  DsnFields f;
  for (std::string_view l : lines) {
    if (!l.empty() && (l[0] == ' ' || l[0] == '\t')) {
      if (!f.fields.empty()) {
        f.fields.back().second += " ";
        f.fields.back().second += trim(l);
      }
      continue;
    }
    size_t colon = l.find(':');
    if (colon == std::string_view::npos) continue;
    f.fields.emplace_back(std::string(trim(l.substr(0, colon))),
                          std::string(trim(l.substr(colon + 1))));
  }
  return f;
}

// A Content-Type parameter ("boundary"), unquoted; "" if absent.
std::string param(std::string_view ct, std::string_view name) {
  size_t i = ct.find(';');
  while (i != std::string_view::npos && i < ct.size()) {
    ++i;
    size_t eq = ct.find('=', i);
    if (eq == std::string_view::npos) break;
    std::string_view key = trim(ct.substr(i, eq - i));
    size_t v = eq + 1;
    std::string value;
    size_t next;
    if (v < ct.size() && ct[v] == '"') {
      size_t close = ct.find('"', v + 1);
      if (close == std::string_view::npos) close = ct.size();
      value = std::string(ct.substr(v + 1, close - v - 1));
      next = ct.find(';', close);
    } else {
      next = ct.find(';', v);
      value = std::string(trim(ct.substr(
          v, next == std::string_view::npos ? ct.size() - v : next - v)));
    }
    if (iequals(key, name)) return value;
    i = next;
  }
  return "";
}

struct Part {
  DsnFields headers;
  std::string body;  // CRLF lines
};

}  // namespace

std::optional<ParsedDsn> parse_dsn(std::string_view bytes, std::string& error) {
  std::vector<std::string_view> lines = lines_of(bytes);
  ParsedDsn d;

  // Message header.
  size_t i = 0;
  std::vector<std::string_view> head;
  while (i < lines.size() && !lines[i].empty()) head.push_back(lines[i++]);
  d.headers = parse_fields(head);
  std::string ct = d.headers.get("Content-Type");
  if (!istarts(ct, "multipart/report")) {
    error = "not a multipart/report (Content-Type: " + ct + ")";
    return std::nullopt;
  }
  d.report_type = param(ct, "report-type");
  std::string boundary = param(ct, "boundary");
  if (boundary.empty()) {
    error = "multipart/report without a boundary";
    return std::nullopt;
  }

  // Split the body at the boundary lines.
  std::vector<Part> parts;
  std::string delim = "--" + boundary;
  bool in_part = false, ended = false;
  std::vector<std::string_view> cur;
  auto finish = [&] {
    if (!in_part) return;
    Part p;
    size_t j = 0;
    std::vector<std::string_view> ph;
    while (j < cur.size() && !cur[j].empty()) ph.push_back(cur[j++]);
    p.headers = parse_fields(ph);
    // The CRLF before a boundary line belongs to the boundary.
    size_t end = cur.size();
    for (size_t k = j + 1; k < end; ++k) {
      p.body += cur[k];
      if (k + 1 < end) p.body += kCrlf;
    }
    parts.push_back(std::move(p));
    cur.clear();
  };
  for (++i; i < lines.size(); ++i) {
    std::string_view l = lines[i];
    if (l == delim + "--") {
      finish();
      ended = true;
      break;
    }
    if (l == delim) {
      finish();
      in_part = true;
      continue;
    }
    if (in_part) cur.push_back(l);
  }
  if (!ended) {
    error = "multipart/report without its closing boundary";
    return std::nullopt;
  }

  // Find the parts by type.
  bool have_status = false;
  for (size_t k = 0; k < parts.size(); ++k) {
    std::string pct = parts[k].headers.get("Content-Type");
    if (k == 0 && (pct.empty() || istarts(pct, "text/plain"))) {
      d.text = parts[k].body;
    } else if (istarts(pct, "message/delivery-status")) {
      have_status = true;
      std::vector<std::string_view> group;
      bool first = true;
      std::vector<std::string_view> body = lines_of(parts[k].body);
      body.push_back("");
      for (std::string_view l : body) {
        if (!l.empty()) {
          group.push_back(l);
          continue;
        }
        if (group.empty()) continue;
        if (first)
          d.per_message = parse_fields(group);
        else
          d.per_recipient.push_back(parse_fields(group));
        first = false;
        group.clear();
      }
    } else if (istarts(pct, "message/rfc822") ||
               istarts(pct, "text/rfc822-headers")) {
      d.returned_type = std::string(trim(pct.substr(0, pct.find(';'))));
      d.returned = parts[k].body;
    }
  }
  if (!have_status) {
    error = "no message/delivery-status part";
    return std::nullopt;
  }
  if (!d.per_message.has("Reporting-MTA")) {
    error = "delivery-status without Reporting-MTA";
    return std::nullopt;
  }
  return d;
}

}  // namespace ferry::gw
