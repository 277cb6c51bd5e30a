#include "gateway/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace ferry::gw {
namespace {

Config parse_ok(std::string_view text) {
  Config c;
  std::string error;
  EXPECT_TRUE(parse_config(text, "ferry.conf", c, error)) << error;
  return c;
}

std::string parse_error(std::string_view text) {
  Config c;
  std::string error;
  EXPECT_FALSE(parse_config(text, "ferry.conf", c, error)) << text;
  return error;
}

TEST(Config, EmptyFileGivesDefaults) {
  Config c = parse_ok("");
  EXPECT_EQ(c.source, "ferry.conf");
  EXPECT_EQ(c.spool_dir, "/var/spool/ferry");
  EXPECT_EQ(c.control_socket, "/run/ferry/ctl.sock");
  EXPECT_EQ(c.smtp.max_message_size, 35ull << 20);
  EXPECT_EQ(c.smtp.command_timeout, std::chrono::seconds(300));
  EXPECT_EQ(c.smtp.greeting_pause, std::chrono::milliseconds(500));
  EXPECT_TRUE(c.listeners.empty());
}

TEST(Config, ReadsEveryKindOfValue) {
  Config c = parse_ok(R"(
# comment
; also a comment
[ferryd]
hostname = gw.example.org
spool=/tmp/spool

[listener mx]
address = 127.0.0.1:2525
[listener sub]
address = [::1]:587
mode = submission
require_auth = yes
trusted_local = TRUE
starttls = off

[smtp]
max_message_size = 10M
max_line_length = 1000
command_timeout = 2h
data_block_timeout = 45
greeting_pause = 2s
vrfy = yes
max_recipients = 7

[local]
domains = Example.ORG, mail.example.org
domains = other.example
[rules]
office_networks = 10.0.0.0/8 2001:db8::/32
user_size_limits = Alice:1G, bob:512K
)");
  EXPECT_EQ(c.hostname, "gw.example.org");
  EXPECT_EQ(c.spool_dir, "/tmp/spool");
  ASSERT_EQ(c.listeners.size(), 2u);
  EXPECT_EQ(c.listeners[0].name, "mx");
  EXPECT_EQ(c.listeners[0].address, "127.0.0.1:2525");
  EXPECT_EQ(c.listeners[0].mode, ListenerConfig::Mode::relay);
  EXPECT_TRUE(c.listeners[0].starttls);
  EXPECT_EQ(c.listeners[1].mode, ListenerConfig::Mode::submission);
  EXPECT_TRUE(c.listeners[1].require_auth);
  EXPECT_TRUE(c.listeners[1].trusted_local);
  EXPECT_FALSE(c.listeners[1].starttls);
  EXPECT_EQ(c.smtp.max_message_size, 10ull << 20);
  EXPECT_EQ(c.smtp.max_line_length, 1000u);
  EXPECT_EQ(c.smtp.command_timeout, std::chrono::hours(2));
  EXPECT_EQ(c.smtp.data_block_timeout, std::chrono::seconds(45));
  EXPECT_EQ(c.smtp.greeting_pause, std::chrono::seconds(2));
  EXPECT_TRUE(c.smtp.vrfy);
  EXPECT_EQ(c.smtp.max_recipients, 7u);
  EXPECT_EQ(c.local.domains,
            (std::vector<std::string>{"example.org", "mail.example.org",
                                      "other.example"}));
  EXPECT_EQ(c.rules.office_networks,
            (std::vector<std::string>{"10.0.0.0/8", "2001:db8::/32"}));
  EXPECT_EQ(c.rules.user_size_limits.at("alice"), 1ull << 30);
  EXPECT_EQ(c.rules.user_size_limits.at("bob"), 512ull << 10);
}

// The exact message users see; pinned because docs quote it.
TEST(Config, BadValueErrorNamesFileLineKeyAndExpectation) {
  std::string text = "\n\n\n\n\n\n\n\n\n\n[smtp]\nmax_message_size = big\n";
  EXPECT_EQ(parse_error(text),
            "ferry.conf:12: [smtp] max_message_size: expected a size such "
            "as 10M, got 'big'");
}

TEST(Config, ErrorsNameWhatIsWrong) {
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"[smtp]\ncolour = blue\n", "ferry.conf:2: [smtp] colour: unknown key"},
      {"[smpt]\n", "ferry.conf:1: unknown section [smpt]"},
      {"hostname = x\n", "ferry.conf:1: hostname: key outside any"},
      {"[ferryd]\nhostname = a\nhostname = b\n",
       "ferry.conf:3: [ferryd] hostname: already set on line 2"},
      {"[smtp]\ncommand_timeout = soon\n",
       "ferry.conf:2: [smtp] command_timeout: expected a duration"},
      {"[smtp]\ncommand_timeout = 1500ms\n", "whole seconds"},
      {"[smtp]\nvrfy = maybe\n",
       "ferry.conf:2: [smtp] vrfy: expected yes or no, got 'maybe'"},
      {"[smtp]\nmax_recipients = 0\n", "expected a whole number"},
      {"[smtp]\nmax_message_size = 99999999999999999999\n", "expected a size"},
      {"[smtp]\nmax_message_size = 20000000T\n", "expected a size"},
      {"[listener]\n", "ferry.conf:1: section [listener] needs a name"},
      {"[smtp extra]\n", "ferry.conf:1: section [smtp] takes no name"},
      {"[listener a]\naddress = 127.0.0.1:25\n[listener a]\n",
       "ferry.conf:3: [listener a] appears twice"},
      {"[listener a]\nmode = relay\n",
       "ferry.conf:1: [listener a] address: required"},
      {"[listener a]\naddress = localhost:25\n",
       "ferry.conf:2: [listener a] address: expected an address"},
      {"[listener a]\naddress = 127.0.0.1:70000\n", "expected an address"},
      {"[listener a]\naddress = ::1:25\n", "expected an address"},
      {"[listener a]\naddress = 127.0.0.1:25\nmode = open\n",
       "ferry.conf:3: [listener a] mode: expected relay or submission"},
      {"[rules]\noffice_networks = 10.0.0.1/8\n",
       "ferry.conf:2: [rules] office_networks: expected networks"},
      {"[rules]\nbarred_senders = not-an-address\n", "bad item"},
      {"[rules]\nuser_size_limits = alice\n", "user:size"},
      {"[local]\ndomains = bad..example\n", "bad item 'bad..example'"},
      {"[tls]\ncertificate = /x.pem\n", "certificate and key"},
      {"[smtp\n", "ferry.conf:1: expected [section]"},
      {"[smtp]\njust words\n", "ferry.conf:2: expected key = value"},
      {"[peer isp]\nphone = 123\n",
       "ferry.conf:2: [peer isp] phone: unknown key"},
  };
  for (const Case& c : cases) {
    std::string error = parse_error(c.text);
    EXPECT_NE(error.find(c.want), std::string::npos)
        << "text: " << c.text << "\ngot: " << error << "\nwant: " << c.want;
  }
}

TEST(Config, CrLfLinesAreAccepted) {
  Config c = parse_ok("[ferryd]\r\nhostname = h\r\n");
  EXPECT_EQ(c.hostname, "h");
}

TEST(Config, LoadNamesMissingFile) {
  Config c;
  std::string error;
  EXPECT_FALSE(load_config("/nonexistent/ferry.conf", c, error));
  EXPECT_NE(error.find("/nonexistent/ferry.conf"), std::string::npos);
}

TEST(Config, SampleFileLoadsCleanly) {
  Config c;
  std::string error;
  ASSERT_TRUE(load_config(FERRY_SOURCE_DIR "/etc/ferry.conf", c, error))
      << error;
  EXPECT_EQ(c.listeners.size(), 2u);
  EXPECT_FALSE(c.local.domains.empty());
  EXPECT_FALSE(c.rules.office_networks.empty());
}

// Random single-byte damage to the sample file (fixed seed, bounded):
// every outcome is either a clean parse or one error naming the file and
// a line, never a crash.
TEST(Config, DamagedSampleGivesCleanErrors) {
  std::ifstream in(FERRY_SOURCE_DIR "/etc/ferry.conf");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string sample = ss.str();
  ASSERT_FALSE(sample.empty());
  const char alphabet[] = "[]=#;:,@/ \n\r\tx9\x80";
  std::mt19937 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::string s = sample;
    size_t at = rng() % s.size();
    s[at] = alphabet[rng() % (sizeof alphabet - 1)];
    Config c;
    std::string error;
    if (!parse_config(s, "damaged.conf", c, error)) {
      EXPECT_EQ(error.rfind("damaged.conf:", 0), 0u) << error;
    }
  }
}

// Lines "key = value" under each "[section]" of describe_effective().
std::map<std::string, std::string> effective(const Config& c) {
  std::map<std::string, std::string> out;
  std::istringstream in(describe_effective(c));
  std::string line, section;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      section = line;
      continue;
    }
    size_t eq = line.find(" =");
    std::string value = line.substr(eq + 2);
    if (!value.empty()) value.erase(0, 1);
    out[section + " " + line.substr(0, eq)] = value;
  }
  return out;
}

TEST(Config, DescribeEffectivePrintsEveryKeyWithRegistryDefault) {
  // One section of each named kind, with only the keys they need.
  Config c = parse_ok(
      "[listener l]\naddress = 127.0.0.1:25\n"
      "[link]\ncertificate = /c.pem\nkey = /k.pem\n"
      "[peer l]\npsk_file = /p.key\n"
      "[modem l]\ndevice = /dev/ttyS0\n");
  const std::set<std::string> given{"[listener l] address",
                                    "[link] certificate", "[link] key",
                                    "[peer l] psk_file", "[modem l] device"};
  auto eff = effective(c);
  for (const ConfigKey& k : config_keys()) {
    std::string sec = is_named_section(k.section)
                          ? "[" + std::string(k.section) + " l]"
                          : "[" + std::string(k.section) + "]";
    auto it = eff.find(sec + " " + std::string(k.key));
    ASSERT_NE(it, eff.end()) << sec << " " << k.key;
    if (!given.count(sec + " " + std::string(k.key))) {
      EXPECT_EQ(it->second, k.default_value) << sec << " " << k.key;
    }
  }
  EXPECT_EQ(eff.size(), config_keys().size());
}

TEST(Config, DescribeEffectiveReadsBackToTheSameSettings) {
  Config c;
  std::string error;
  ASSERT_TRUE(load_config(FERRY_SOURCE_DIR "/etc/ferry.conf", c, error));
  std::string described = describe_effective(c);
  Config again = parse_ok(described);
  EXPECT_EQ(effective(again), effective(c)) << described;
}

TEST(Config, RegistryHasNoDuplicatesAndEveryKeyHasDoc) {
  std::set<std::string> seen;
  for (const ConfigKey& k : config_keys()) {
    EXPECT_TRUE(
        seen.insert(std::string(k.section) + "." + std::string(k.key)).second)
        << k.section << "." << k.key;
    EXPECT_FALSE(k.doc.empty()) << k.key;
    EXPECT_FALSE(key_type_name(k.type).empty());
  }
}

// --- [ferryd] account keys, [link], [peer NAME], [modem NAME], [schedule]

// Our link identity, which every ferry peer needs.
const std::string kLink =
    "[link]\ncertificate = /etc/ferry/link.pem\nkey = /etc/ferry/link.key\n";
const std::string kFingerprint =
    "sha256:"
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
// A modem that dials, for peers reached by phone.
const std::string kModem = "[modem m0]\ndevice = /dev/ttyS0\n";

TEST(ConfigFerryd, AccountAndControlSocketKeys) {
  Config c = parse_ok(
      "[ferryd]\nuser = ferry\ncontrol_group = ferryadm\n"
      "control_mode = 0640\n");
  EXPECT_EQ(c.user, "ferry");
  EXPECT_EQ(c.control_group, "ferryadm");
  EXPECT_EQ(c.control_mode, 0640u);
  EXPECT_EQ(parse_ok("[ferryd]\ncontrol_mode = 600\n").control_mode, 0600u);
  EXPECT_EQ(parse_ok("").control_mode, 0660u);
  EXPECT_EQ(parse_error("[ferryd]\ncontrol_mode = 0999\n"),
            "ferry.conf:2: [ferryd] control_mode: expected an octal mode "
            "such as 0660, got '0999'");
  EXPECT_NE(parse_error("[ferryd]\ncontrol_mode = 01777\n").find("octal"),
            std::string::npos);
  EXPECT_NE(parse_error("[ferryd]\nuser = -root\n").find("[ferryd] user"),
            std::string::npos);
  EXPECT_NE(parse_error("[ferryd]\ncontrol_group = a b\n")
                .find("[ferryd] control_group"),
            std::string::npos);
}

TEST(ConfigLink, ReadsIdentityListenersAndWindow) {
  Config c = parse_ok(kLink +
                      "listen = 127.0.0.1:7625, [::1]:7625\n"
                      "chunk_size = 4K\nwindow_chunks = 8\ntimeout = 2m\n");
  EXPECT_EQ(c.link.certificate, "/etc/ferry/link.pem");
  EXPECT_EQ(c.link.key, "/etc/ferry/link.key");
  EXPECT_EQ(c.link.listen,
            (std::vector<std::string>{"127.0.0.1:7625", "[::1]:7625"}));
  EXPECT_EQ(c.link.chunk_size, 4096u);
  EXPECT_EQ(c.link.window_chunks, 8u);
  EXPECT_EQ(c.link.timeout, std::chrono::minutes(2));

  Config d = parse_ok("");
  EXPECT_EQ(d.link.chunk_size, 16u << 10);
  EXPECT_EQ(d.link.window_chunks, 4u);
  EXPECT_EQ(d.link.timeout, std::chrono::minutes(5));
}

TEST(ConfigLink, RejectsBadValues) {
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"[link]\nchunk_size = 100\n",
       "ferry.conf:2: [link] chunk_size: expected a size from 256 to 1M"},
      {"[link]\nchunk_size = 2M\n", "expected a size from 256 to 1M"},
      {"[link]\nwindow_chunks = 0\n",
       "ferry.conf:2: [link] window_chunks: expected a whole number from 1 "
       "to 64"},
      {"[link]\nlisten = localhost:7625\n",
       "[link] listen: expected addresses"},
      {"[link]\ntimeout = 0\n", "[link] timeout: expected a duration"},
      {"[link]\ncertificate = /c.pem\n",
       "ferry.conf:1: [link] key: expected certificate and key given "
       "together"},
  };
  for (const Case& c : cases) {
    std::string error = parse_error(c.text);
    EXPECT_NE(error.find(c.want), std::string::npos)
        << "text: " << c.text << "\ngot: " << error << "\nwant: " << c.want;
  }
}

TEST(ConfigPeer, ReadsEveryPeerKey) {
  Config c = parse_ok(kLink + kModem + R"(
[peer branch]
domains = Branch.Example, b2.example
domains = b3.example
dial = yes
fingerprint = )" + std::string("SHA256:") +
                      "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
                      "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff" +
                      R"(
psk_file = /etc/ferry/branch.psk
routes = 5551234 tcp:127.0.0.1:7625
line = m0
windows = Mon-Fri 18:00-07:30
zone = +01:00
poll = 12:30 08:00
min_messages = 5
min_bytes = 64K
max_age = 2h
urgent_priority = 2
urgent_ignores_window = yes
max_call = 20m
min_gap = 10m
max_calls_per_day = 12
lifetime = 3d
lifetime_missed = 4
warn_after = 6h
retry_busy = 1m
retry_no_answer = 20m
retry_factor = 1.5
retry_cap = 2h
retry_jitter = 0.2
modem_reset_limit = 5

[peer isp]
protocol = SMTP
smarthost = yes
dial = no
smtp_starttls = required
smtp_auth_user = office@isp.example
smtp_auth_password_file = /etc/ferry/isp.pass
atrn = yes
pop3_server = 192.0.2.7:995
pop3_user = office
pop3_password_file = /etc/ferry/pop3.pass
pop3_stls = no
pop3_envelope_headers = X-Envelope-To
)");
  ASSERT_EQ(c.peers.size(), 2u);
  const PeerConfig& b = c.peers[0];
  EXPECT_EQ(b.name, "branch");
  EXPECT_EQ(b.domains, (std::vector<std::string>{"branch.example", "b2.example",
                                                 "b3.example"}));
  EXPECT_EQ(b.protocol, PeerConfig::Protocol::ferry);
  EXPECT_TRUE(b.dial);
  EXPECT_FALSE(b.smarthost);
  EXPECT_EQ(b.fingerprint, kFingerprint);
  EXPECT_EQ(b.psk_file, "/etc/ferry/branch.psk");
  const PeerSchedule& s = b.schedule;
  EXPECT_EQ(s.name, "branch");
  EXPECT_EQ(s.routes,
            (std::vector<std::string>{"5551234", "tcp:127.0.0.1:7625"}));
  EXPECT_EQ(s.line, "m0");
  EXPECT_EQ(s.windows.spec(), "Mon-Fri 18:00-07:30");
  EXPECT_EQ(s.zone.name(), "+01:00");
  EXPECT_EQ(s.triggers.poll_times, (std::vector<int>{8 * 60, 12 * 60 + 30}));
  EXPECT_EQ(s.triggers.min_messages, 5u);
  EXPECT_EQ(s.triggers.min_bytes, 64u << 10);
  EXPECT_EQ(s.triggers.max_age, std::chrono::hours(2));
  EXPECT_EQ(s.triggers.urgent_priority, 2);
  EXPECT_TRUE(s.triggers.urgent_ignores_window);
  EXPECT_EQ(s.limits.max_call, std::chrono::minutes(20));
  EXPECT_EQ(s.limits.min_gap, std::chrono::minutes(10));
  EXPECT_EQ(s.limits.max_calls_per_day, 12u);
  EXPECT_EQ(s.lifetime.max_age, std::chrono::hours(72));
  EXPECT_EQ(s.lifetime.max_missed, 4u);
  EXPECT_EQ(s.lifetime.warn_after, std::chrono::hours(6));
  EXPECT_EQ(s.retry.base[static_cast<int>(FailureClass::busy)],
            std::chrono::minutes(1));
  EXPECT_EQ(s.retry.base[static_cast<int>(FailureClass::no_answer)],
            std::chrono::minutes(20));
  EXPECT_EQ(s.retry.base[static_cast<int>(FailureClass::dropped)],
            std::chrono::minutes(1));  // untouched default
  EXPECT_DOUBLE_EQ(s.retry.factor, 1.5);
  EXPECT_EQ(s.retry.cap, std::chrono::hours(2));
  EXPECT_DOUBLE_EQ(s.retry.jitter, 0.2);
  EXPECT_EQ(s.retry.modem_reset_limit, 5);

  const PeerConfig& i = c.peers[1];
  EXPECT_EQ(i.protocol, PeerConfig::Protocol::smtp);
  EXPECT_TRUE(i.smarthost);
  EXPECT_FALSE(i.dial);
  EXPECT_EQ(i.smtp_starttls, PeerConfig::Tls::required);
  EXPECT_EQ(i.smtp_auth_user, "office@isp.example");
  EXPECT_EQ(i.smtp_auth_password_file, "/etc/ferry/isp.pass");
  EXPECT_TRUE(i.atrn);
  EXPECT_EQ(i.pop3_server, "192.0.2.7:995");
  EXPECT_EQ(i.pop3_user, "office");
  EXPECT_EQ(i.pop3_password_file, "/etc/ferry/pop3.pass");
  EXPECT_EQ(i.pop3_stls, PeerConfig::Tls::no);
  EXPECT_EQ(i.pop3_envelope_headers,
            (std::vector<std::string>{"x-envelope-to"}));
  EXPECT_EQ(i.schedule.line, "any");
}

TEST(ConfigPeer, DefaultsMatchTheStructs) {
  Config c = parse_ok(kLink + "[peer p]\npsk_file = /p\n");
  const PeerConfig& p = c.peers.at(0);
  PeerConfig fresh;
  EXPECT_EQ(p.protocol, fresh.protocol);
  EXPECT_EQ(p.smtp_starttls, PeerConfig::Tls::yes);
  EXPECT_EQ(p.pop3_stls, PeerConfig::Tls::yes);
  EXPECT_EQ(p.pop3_envelope_headers, fresh.pop3_envelope_headers);
  EXPECT_TRUE(p.dial);
  // The config layer's default line is any free modem.
  EXPECT_EQ(p.schedule.line, "any");
  EXPECT_EQ(fresh.schedule.line, "any");
  EXPECT_EQ(Config().schedule_defaults.line, "any");
  EXPECT_EQ(p.schedule.name, "p");
  PeerSchedule plain;
  EXPECT_EQ(p.schedule.limits.max_call, plain.limits.max_call);
  EXPECT_EQ(p.schedule.lifetime.max_age, plain.lifetime.max_age);
}

TEST(ConfigPeer, BadValuesNameLineKeyAndExpectation) {
  EXPECT_EQ(parse_error("[peer p]\nprotocol = uucp\n"),
            "ferry.conf:2: [peer p] protocol: expected ferry or smtp, got "
            "'uucp'");
  EXPECT_EQ(parse_error("[peer p]\n\nmax_call = soon\n"),
            "ferry.conf:3: [peer p] max_call: expected a duration such as "
            "90s, 30m or 1h30m (\"soon\" is not a duration (e.g. 30m, "
            "1h30m)), got 'soon'");
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"[peer p]\nfingerprint = sha256:abc\n",
       "ferry.conf:2: [peer p] fingerprint: expected a fingerprint"},
      {"[peer p]\nsmtp_starttls = maybe\n",
       "[peer p] smtp_starttls: expected no, yes or required"},
      {"[peer p]\npop3_stls = always\n", "[peer p] pop3_stls: expected no"},
      {"[peer p]\npop3_server = pop.example:110\n",
       "[peer p] pop3_server: expected an address"},
      {"[peer p]\npop3_envelope_headers = to:\n", "bad item 'to:'"},
      {"[peer p]\nsmtp_auth_user = a b\n", "[peer p] smtp_auth_user"},
      {"[peer p]\ndomains = bad..example\n", "bad item 'bad..example'"},
      {"[peer p]\nsmarthost = perhaps\n", "expected yes or no"},
      {"[peer p]\nwindows = Mon 25:00-26:00\n",
       "ferry.conf:2: [peer p] windows: expected call windows"},
      {"[peer p]\nzone = Mars/Olympus\n",
       "ferry.conf:2: [peer p] zone: expected UTC, +HH:MM"},
      {"[peer p]\npoll = 8am\n", "[peer p] poll: expected times of day"},
      {"[peer p]\nmin_messages = some\n", "is not a whole number"},
      {"[peer p]\nmin_bytes = lots\n", "[peer p] min_bytes: expected a size"},
      {"[peer p]\nretry_busy = soon\n", "[peer p] retry_busy: expected a"},
      {"[peer p]\nretry_jitter = 1.5\n", "must be below 1"},
      {"[peer p]\nretry_factor = -2\n", "is not a number"},
      {"[peer p]\nretry_warp = 1m\n",
       "ferry.conf:2: [peer p] retry_warp: unknown key"},
      {"[peer p]\nroutes = call-me\n",
       "ferry.conf:2: [peer p] routes: expected phone numbers (digits and "
       "dial modifiers), tcp:IP:PORT, direct or exec (bad route 'call-me')"},
      {"[peer p]\nroutes = tcp:localhost:25\n", "bad route 'tcp:localhost"},
      {"[peer p]\nline = bad/name\n",
       "[peer p] line: expected the name of a [modem NAME] section or any"},
      {"[peer p]\nwindows = always\nwindows = never\n",
       "ferry.conf:3: [peer p] windows: already set on line 2"},
      {"[peer p]\nroutes = 1\nroutes = 2\n", "already set on line 2"},
      {"[schedule]\nmax_call = never\n",
       "ferry.conf:2: [schedule] max_call: expected a duration"},
      {"[schedule]\npostmaster_copy = nobody\n",
       "ferry.conf:2: [schedule] postmaster_copy: expected an address"},
      {"[schedule]\nreturn_content_limit = all\n",
       "[schedule] return_content_limit: expected a size"},
      {"[schedule]\ndomains = x.example\n", "[schedule] domains: unknown key"},
  };
  for (const Case& c : cases) {
    std::string error = parse_error(c.text);
    EXPECT_NE(error.find(c.want), std::string::npos)
        << "text: " << c.text << "\ngot: " << error << "\nwant: " << c.want;
  }
}

TEST(ConfigSchedule, DefaultsApplyToEveryPeerWhereverTheyStand) {
  for (bool schedule_first : {true, false}) {
    std::string schedule =
        "[schedule]\nwindows = Mon-Fri 08:00-18:00\nmax_call = 10m\n"
        "retry_busy = 7m\nline = m0\npostmaster_copy = pm@example.org\n"
        "return_content_limit = 1M\n";
    std::string peers = kModem + kLink +
                        "[peer a]\npsk_file = /a\nroutes = 5551\n"
                        "[peer b]\npsk_file = /b\nroutes = 5552\n"
                        "max_call = 45m\nwindows = never\n";
    Config c = parse_ok(schedule_first ? schedule + peers : peers + schedule);
    ASSERT_EQ(c.peers.size(), 2u);
    const PeerSchedule& a = c.peers[0].schedule;
    const PeerSchedule& b = c.peers[1].schedule;
    EXPECT_EQ(a.windows.spec(), "Mon-Fri 08:00-18:00") << schedule_first;
    EXPECT_EQ(a.limits.max_call, std::chrono::minutes(10));
    EXPECT_EQ(a.line, "m0");
    EXPECT_EQ(a.name, "a");
    EXPECT_EQ(b.windows.spec(), "never");
    EXPECT_EQ(b.limits.max_call, std::chrono::minutes(45));
    EXPECT_EQ(b.retry.base[static_cast<int>(FailureClass::busy)],
              std::chrono::minutes(7));
    EXPECT_EQ(b.line, "m0");
    EXPECT_EQ(c.schedule_defaults.limits.max_call, std::chrono::minutes(10));
    EXPECT_EQ(c.notify.postmaster_copy, "pm@example.org");
    EXPECT_EQ(c.notify.return_content_limit, 1u << 20);
  }
  EXPECT_EQ(parse_ok("").notify.return_content_limit, 64u << 10);
}

// Each FailureClass has its retry_<class> key in both sections, and the
// key sets exactly that class's first wait.
TEST(ConfigSchedule, EveryFailureClassHasARetryKey) {
  std::set<std::string> registry;
  for (const ConfigKey& k : config_keys()) {
    registry.insert(std::string(k.section) + "." + std::string(k.key));
  }
  for (int i = 0; i < kFailureClasses; ++i) {
    std::string key =
        "retry_" + std::string(to_string(static_cast<FailureClass>(i)));
    EXPECT_TRUE(registry.count("peer." + key)) << key;
    EXPECT_TRUE(registry.count("schedule." + key)) << key;
    Config c = parse_ok("[schedule]\n" + key + " = 17m\n");
    for (int j = 0; j < kFailureClasses; ++j) {
      auto want =
          i == j ? std::chrono::seconds(17 * 60) : RetryPolicy().base[j];
      EXPECT_EQ(c.schedule_defaults.retry.base[j], want) << key << " " << j;
    }
  }
}

TEST(ConfigModem, ReadsEveryModemKey) {
  Config c = parse_ok(R"(
[modem fax]
device = /dev/ttyUSB0
answer = no
dial = yes
baud = 57600
rts_cts = no
reset_command = AT&F
init_string = ATE0 V1 &C1 &D2
optional_init = AT&K3
optional_init = AT+MS=V34
dial_mode = pulse
dial_prefix = 9W
hangup = escape
answer_method = modem
answer_rings = 3
reset_pause = 1s
command_timeout = 3s
reset_timeout = 8s
dial_timeout = 2m
answer_timeout = 70s
hangup_timeout = 15s
guard_time = 1500ms
dtr_drop = 700ms
ring_gap = 12s
line_poll = 50ms
lock_wait = 30s
time_scale = 0.01

[modem cable]
device = /dev/ttyS1
direct = yes
)");
  ASSERT_EQ(c.modems.size(), 2u);
  const ModemConfig& m = c.modems[0];
  using ms = std::chrono::milliseconds;
  EXPECT_EQ(m.name, "fax");
  EXPECT_EQ(m.profile.name, "fax");
  EXPECT_EQ(m.device, "/dev/ttyUSB0");
  EXPECT_FALSE(m.answer);
  EXPECT_TRUE(m.dial);
  EXPECT_FALSE(m.direct);
  EXPECT_EQ(m.profile.baud, 57600u);
  EXPECT_FALSE(m.profile.rts_cts);
  EXPECT_EQ(m.profile.reset_command, "AT&F");
  EXPECT_EQ(m.profile.init_string, "ATE0 V1 &C1 &D2");
  EXPECT_EQ(m.profile.optional_init,
            (std::vector<std::string>{"AT&K3", "AT+MS=V34"}));
  EXPECT_EQ(m.profile.dial_mode, modem::DialMode::pulse);
  EXPECT_EQ(m.profile.dial_prefix, "9W");
  EXPECT_EQ(m.profile.hangup, modem::HangupMethod::escape);
  EXPECT_EQ(m.profile.answer, modem::AnswerMethod::modem);
  EXPECT_EQ(m.profile.answer_rings, 3u);
  EXPECT_EQ(m.profile.reset_pause, ms(1000));
  EXPECT_EQ(m.profile.command_timeout, ms(3000));
  EXPECT_EQ(m.profile.reset_timeout, ms(8000));
  EXPECT_EQ(m.profile.dial_timeout, ms(120000));
  EXPECT_EQ(m.profile.answer_timeout, ms(70000));
  EXPECT_EQ(m.profile.hangup_timeout, ms(15000));
  EXPECT_EQ(m.profile.guard_time, ms(1500));
  EXPECT_EQ(m.profile.dtr_drop, ms(700));
  EXPECT_EQ(m.profile.ring_gap, ms(12000));
  EXPECT_EQ(m.profile.line_poll, ms(50));
  EXPECT_EQ(m.profile.lock_wait, ms(30000));
  EXPECT_DOUBLE_EQ(m.profile.time_scale, 0.01);

  const ModemConfig& d = c.modems[1];
  EXPECT_TRUE(d.direct);
  EXPECT_TRUE(d.answer);
  EXPECT_TRUE(d.dial);
  // Unset keys keep modem/profile.h's defaults.
  modem::ModemProfile plain;
  EXPECT_EQ(d.profile.baud, plain.baud);
  EXPECT_EQ(d.profile.init_string, plain.init_string);
  EXPECT_EQ(d.profile.dial_timeout, plain.dial_timeout);
  EXPECT_EQ(d.profile.guard_time, plain.guard_time);
  EXPECT_DOUBLE_EQ(d.profile.time_scale, 1.0);
}

TEST(ConfigModem, BadValuesNameLineKeyAndExpectation) {
  EXPECT_EQ(parse_error("[modem m]\ndevice = /dev/ttyS0\ntime_scale = 0\n"),
            "ferry.conf:3: [modem m] time_scale: expected a number above 0 "
            "such as 1 or 0.01, got '0'");
  struct Case {
    const char* text;
    const char* want;
  };
  const Case cases[] = {
      {"[modem m]\nbaud = fast\n", "[modem m] baud: expected a port speed"},
      {"[modem m]\nbaud = 10\n", "expected a port speed"},
      {"[modem m]\ndial_mode = rotary\n", "expected tone or pulse"},
      {"[modem m]\nhangup = drop\n", "expected auto, dtr or escape"},
      {"[modem m]\nanswer_method = both\n", "expected host or modem"},
      {"[modem m]\nanswer_rings = 0\n", "expected a whole number from 1"},
      {"[modem m]\nanswer_rings = 256\n", "expected a whole number from 1"},
      {"[modem m]\ncommand_timeout = 0\n",
       "[modem m] command_timeout: expected a duration above zero"},
      {"[modem m]\nreset_pause = soon\n", "[modem m] reset_pause: expected"},
      {"[modem m]\ntime_scale = -1\n", "expected a number above 0"},
      {"[modem m]\ntime_scale = fast\n", "expected a number above 0"},
      {"[modem m]\nreset_command = reset\n",
       "[modem m] reset_command: expected an AT command"},
      {"[modem m]\noptional_init = &K3\n",
       "[modem m] optional_init: expected an AT command"},
      {"[modem m]\ndial_prefix = 9 W\n", "[modem m] dial_prefix: expected"},
      {"[modem m]\ndirect = sometimes\n", "expected yes or no"},
      {"[modem m]\nanswer = yes\n", "ferry.conf:1: [modem m] device: required"},
      {"[modem any]\ndevice = /dev/ttyS0\n",
       "ferry.conf:1: [modem any]: expected another name"},
      {"[modem m]\ndevice = /dev/ttyS0\n[modem m]\n",
       "ferry.conf:3: [modem m] appears twice"},
  };
  for (const Case& c : cases) {
    std::string error = parse_error(c.text);
    EXPECT_NE(error.find(c.want), std::string::npos)
        << "text: " << c.text << "\ngot: " << error << "\nwant: " << c.want;
  }
}

TEST(ConfigCrossCheck, GoodCombinationsLoad) {
  // tcp and pickup peers need no modem; psk_file alone identifies a peer.
  parse_ok(kLink + "[peer a]\npsk_file = /a\nroutes = tcp:127.0.0.1:7625\n");
  parse_ok(kLink + "[peer a]\npsk_file = /a\ndial = no\nroutes = 5551234\n");
  parse_ok(kLink + "[peer a]\nfingerprint = " + kFingerprint + "\n");
  // An smtp peer needs no [link].
  parse_ok("[peer isp]\nprotocol = smtp\nroutes = tcp:127.0.0.1:25\n");
  // Numbers with dial modifiers on any modem or a named one.
  parse_ok(kModem + kLink + "[peer a]\npsk_file = /a\nroutes = 9W5551234\n");
  parse_ok(kModem + kLink +
           "[peer a]\npsk_file = /a\nroutes = *70,5551234\nline = m0\n");
  // A direct line.
  parse_ok(kLink +
           "[modem cable]\ndevice = /dev/ttyS1\ndirect = yes\n"
           "[peer a]\npsk_file = /a\nroutes = direct\nline = cable\n");
  // A command's stdin and stdout as the line; routes may mix kinds.
  Config c = parse_ok(kLink +
                      "[peer a]\npsk_file = /a\nroutes = exec "
                      "tcp:127.0.0.1:7625\ncommand = ssh -T b socat - "
                      "TCP:127.0.0.1:7726\n");
  EXPECT_EQ(c.peers.at(0).command, "ssh -T b socat - TCP:127.0.0.1:7726");
}

TEST(ConfigCrossCheck, SeveralPeersMayServeOneDomainWithPreferences) {
  Config c = parse_ok(
      kLink +
      "[peer b]\npsk_file = /a\nroutes = tcp:127.0.0.1:7625\n"
      "domains = b.example\npreference = 5\nfailover_after = 3\n"
      "[peer relay]\npsk_file = /a\nroutes = tcp:127.0.0.1:7626\n"
      "domains = b.example c.example\n");
  EXPECT_EQ(c.peers.at(0).preference, 5u);
  EXPECT_EQ(c.peers.at(0).failover_after, 3u);
  EXPECT_EQ(c.peers.at(1).preference, 10u);
  EXPECT_EQ(c.peers.at(1).failover_after, 1u);
}

TEST(ConfigCrossCheck, ErrorsNameFileLineKeyAndExpectation) {
  struct Case {
    std::string text;
    const char* want;
  };
  const Case cases[] = {
      {kLink + "[peer a]\npsk_file = /a\nroutes = 5551234\n",
       "ferry.conf:6: [peer a] routes: dialling 5551234 for [peer a] needs "
       "a [modem NAME] with dial = yes and direct = no, got none"},
      {kLink + "[modem m]\ndevice = /dev/ttyS0\ndial = no\n"
               "[peer a]\npsk_file = /a\nroutes = 5551234\n",
       "[peer a] routes: dialling 5551234"},
      {kLink + kModem + "[peer a]\npsk_file = /a\nline = m9\n",
       "ferry.conf:8: [peer a] line: expected the name of a [modem NAME] "
       "section or any, got 'm9'"},
      {kLink + kModem + "[schedule]\nline = m9\n[peer a]\npsk_file = /a\n",
       "ferry.conf:7: [schedule] line: expected the name of a [modem NAME]"},
      {kLink + kModem + "[peer a]\npsk_file = /a\nroutes = direct\n",
       "[peer a] routes: the route direct needs"},
      {kLink + kModem + "[peer a]\npsk_file = /a\nroutes = direct\nline = m0\n",
       "ferry.conf:9: [peer a] line: the route direct needs line to name a "
       "[modem NAME] with direct = yes, got 'm0'"},
      {kLink + "[modem c]\ndevice = /dev/ttyS1\ndirect = yes\n"
               "[peer a]\npsk_file = /a\nroutes = 5551234\nline = c\n",
       "[peer a] line: dialling 5551234 needs a [modem NAME] with dial = "
       "yes and direct = no, got 'c'"},
      {"[peer a]\npsk_file = /a\n",
       "ferry.conf:1: [peer a] protocol: a ferry peer needs our own "
       "identity: expected [link] certificate and key"},
      {kLink + "[peer a]\nroutes = tcp:127.0.0.1:7625\n",
       "ferry.conf:4: [peer a] fingerprint: expected the peer's certificate "
       "fingerprint or a psk_file for a ferry peer, got neither"},
      {"[peer a]\nprotocol = smtp\nsmarthost = yes\n"
       "[peer b]\nprotocol = smtp\nsmarthost = yes\n",
       "ferry.conf:6: [peer b] smarthost: expected one smarthost at most, "
       "but [peer a] is one already"},
      {"[local]\ndomains = example.org\n"
       "[peer a]\nprotocol = smtp\ndomains = Example.org\n",
       "ferry.conf:5: [peer a] domains: expected domains that are not "
       "local, got 'example.org', which is in [local] domains too"},
      {"[peer a]\nprotocol = smtp\nroutes = tcp:127.0.0.1:25 exec\n",
       "[peer a] routes: the route exec needs command = a shell command, "
       "got no command (for [peer a])"},
      {"[peer a]\nprotocol = smtp\nroutes = tcp:127.0.0.1:25\n"
       "command = ssh b nc 127.0.0.1 7726\n",
       "ferry.conf:4: [peer a] command: a command is used by the route exec "
       "only, but routes has no exec"},
      {"[peer a]\nprotocol = smtp\npreference = 65536\n",
       "[peer a] preference: expected a whole number from 0 to 65535"},
      {"[listener mx]\naddress = 127.0.0.1:25\n"
       "[pop3]\nlisten = 127.0.0.1:110 127.0.0.1:25\n",
       "ferry.conf:4: [pop3] listen: expected an address no other listener "
       "uses, got '127.0.0.1:25' (also [listener mx] address on line 2)"},
      {"[listener a]\naddress = [::1]:25\n[listener b]\naddress = [::1]:25\n",
       "ferry.conf:4: [listener b] address: expected an address no other"},
      {kLink + "listen = 127.0.0.1:110\n[pop3]\nlisten = 127.0.0.1:110\n",
       "[link] listen: expected an address no other listener uses"},
      {"[peer isp]\nprotocol = smtp\nsmtp_auth_user = me\n",
       "ferry.conf:3: [peer isp] smtp_auth_password_file: expected a "
       "password file for smtp_auth_user, got none"},
      {"[peer isp]\nprotocol = smtp\npop3_server = 192.0.2.1:110\n",
       "[peer isp] pop3_user: expected a user name for pop3_server"},
      {"[peer isp]\nprotocol = smtp\npop3_server = 192.0.2.1:110\n"
       "pop3_user = u\n",
       "[peer isp] pop3_password_file: expected a password file"},
  };
  for (const Case& c : cases) {
    std::string error = parse_error(c.text);
    EXPECT_NE(error.find(c.want), std::string::npos)
        << "text: " << c.text << "\ngot: " << error << "\nwant: " << c.want;
  }
}

const std::string kTwoOffices = kLink +
                                R"(listen = 127.0.0.1:7625
[local]
domains = north.example
[schedule]
windows = Mon-Fri 18:00-07:30, Sat-Sun 00:00-24:00
zone = Europe/Berlin
retry_no_answer = 25m
postmaster_copy = postmaster@north.example
[modem m0]
device = /dev/ttyS0
optional_init = AT&K3
optional_init = AT\N3
time_scale = 0.05
[modem cable]
device = /dev/ttyS1
direct = yes
answer = no
[peer south]
domains = south.example
fingerprint = )" + kFingerprint +
                                R"(
routes = 0301234567 tcp:[::1]:7625
poll = 07:00 19:15
max_call = 1h30m
retry_factor = 1.75
[peer lab]
domains = lab.north.example
psk_file = /etc/ferry/lab.psk
routes = direct
line = cable
[peer isp]
protocol = smtp
smarthost = yes
dial = no
pop3_server = 192.0.2.7:110
pop3_user = north
pop3_password_file = /etc/ferry/pop3.pass
)";

TEST(ConfigDescribe, RoundTripWithPeersAndModems) {
  Config c = parse_ok(kTwoOffices);
  std::string described = describe_effective(c);
  EXPECT_NE(described.find("\n[peer south]\n"), std::string::npos);
  EXPECT_NE(described.find("\n[modem cable]\n"), std::string::npos);
  EXPECT_NE(described.find("\noptional_init = AT&K3\noptional_init = AT\\N3\n"),
            std::string::npos)
      << described;
  // A peer shows its effective schedule: its own and inherited values.
  auto eff = effective(c);
  EXPECT_EQ(eff["[peer south] max_call"], "90m");
  EXPECT_EQ(eff["[peer south] retry_no_answer"], "25m");
  EXPECT_EQ(eff["[peer south] zone"], "Europe/Berlin");
  EXPECT_EQ(eff["[peer lab] line"], "cable");
  EXPECT_EQ(eff["[peer isp] line"], "any");
  EXPECT_EQ(eff["[modem m0] time_scale"], "0.05");

  Config again = parse_ok(described);
  EXPECT_EQ(describe_effective(again), described);
  ASSERT_EQ(again.peers.size(), 3u);
  ASSERT_EQ(again.modems.size(), 2u);
  EXPECT_EQ(again.peers[0].schedule.routes, c.peers[0].schedule.routes);
  EXPECT_EQ(again.peers[0].schedule.triggers.poll_times,
            c.peers[0].schedule.triggers.poll_times);
  EXPECT_EQ(again.peers[0].fingerprint, kFingerprint);
  EXPECT_DOUBLE_EQ(again.peers[0].schedule.retry.factor, 1.75);
  EXPECT_EQ(again.modems[0].profile.optional_init,
            c.modems[0].profile.optional_init);
  EXPECT_TRUE(again.modems[1].direct);
  EXPECT_EQ(again.notify.postmaster_copy, "postmaster@north.example");
}

// --- check_files ----------------------------------------------------------

class ConfigCheckFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / "ferry-cfg-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    for (const char* f : {"tls.pem", "tls.key", "link.pem", "link.key",
                          "south.psk", "pop3.pass", "tty"}) {
      std::ofstream(dir_ / f) << "x\n";
    }
    std::filesystem::create_directory(dir_ / "spool-parent");
    std::filesystem::create_directory(dir_ / "mail-parent");
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string path(const char* f) const { return (dir_ / f).string(); }

  // A config whose every file exists; `change` edits one line first.
  std::string text(const std::string& from = "",
                   const std::string& to = "") const {
    std::string t = "[ferryd]\nspool = " + path("spool-parent/spool") +
                    "\n[tls]\ncertificate = " + path("tls.pem") +
                    "\nkey = " + path("tls.key") +
                    "\n[local]\nmail_root = " + path("mail-parent/mail") +
                    "/\n[link]\ncertificate = " + path("link.pem") +
                    "\nkey = " + path("link.key") +
                    "\n[modem m0]\ndevice = " + path("tty") +
                    "\n[peer south]\npsk_file = " + path("south.psk") +
                    "\nroutes = 5551234\n"
                    "[peer isp]\nprotocol = smtp\npop3_server = "
                    "192.0.2.7:110\npop3_user = u\npop3_password_file = " +
                    path("pop3.pass") + "\n";
    if (!from.empty()) {
      size_t at = t.find(from);
      EXPECT_NE(at, std::string::npos) << from;
      t.replace(at, from.size(), to);
    }
    return t;
  }

  std::string check(const std::string& conf) const {
    Config c = parse_ok(conf);
    std::string error;
    EXPECT_FALSE(check_files(c, error)) << conf;
    return error;
  }

  std::filesystem::path dir_;
};

TEST_F(ConfigCheckFiles, AllPresentPasses) {
  Config c = parse_ok(text());
  std::string error;
  EXPECT_TRUE(check_files(c, error)) << error;
  // An empty config names no files; the default directories' parents
  // (/var/spool, /var/mail) are not this test's business.
}

TEST_F(ConfigCheckFiles, EachMissingFileIsNamedWithItsKey) {
  struct Case {
    const char* file;  // replaced by a missing name
    std::string want;
  };
  const Case cases[] = {
      // File, line and key, as every configuration error.
      {"tls.pem", "ferry.conf:4: [tls] certificate: " + path("gone") +
                      ": cannot read: No such file or directory"},
      {"tls.key", "[tls] key: "},
      {"link.pem", "[link] certificate: "},
      {"link.key", "[link] key: "},
      {"south.psk", "[peer south] psk_file: " + path("gone")},
      {"pop3.pass", "[peer isp] pop3_password_file: "},
      {"tty", "ferry.conf:12: [modem m0] device: " + path("gone") +
                  ": No such file or directory"},
  };
  for (const Case& c : cases) {
    std::string error = check(text(path(c.file), path("gone")));
    EXPECT_NE(error.find(c.want), std::string::npos)
        << "got: " << error << "\nwant: " << c.want;
  }
}

TEST_F(ConfigCheckFiles, MissingParentDirectoriesAndDirectoriesAsFiles) {
  EXPECT_NE(check(text(path("spool-parent/spool"), path("nope/spool")))
                .find("[ferryd] spool: " + path("nope/spool") +
                      ": its directory " + path("nope") + " is missing"),
            std::string::npos);
  EXPECT_NE(check(text(path("mail-parent/mail"), path("nope/mail")))
                .find("[local] mail_root: "),
            std::string::npos);
  EXPECT_NE(check(text(path("link.pem"), path("spool-parent")))
                .find("[link] certificate: " + path("spool-parent") +
                      ": cannot read: not a regular file"),
            std::string::npos);
}

TEST(ConfigSamples, PeersSampleLoads) {
  Config c;
  std::string error;
  ASSERT_TRUE(load_config(FERRY_SOURCE_DIR "/etc/peers.sample", c, error))
      << error;
  EXPECT_EQ(c.peers.size(), 2u);
  EXPECT_FALSE(c.modems.empty());
}

// --- The man page agrees with the registry --------------------------------
//
// man/ferry.conf.5 documents each key as
//   .SS [section]            (or .SS "[section NAME]")
//   .TP
//   .B key
//   text ... Default: \fBvalue\fR.   (or "Default: none.")
// The check is generic: a key added to the registry without a man entry,
// or the other way round, or a default that differs, fails here.

struct ManEntry {
  std::string default_text;  // "" when the entry says "Default: none."
  bool has_default = false;
};

// Strips the font escapes and \- so the text reads as plain words.
std::string plain(std::string s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      char n = s[i + 1];
      if (n == 'f' && i + 2 < s.size()) {
        i += 2;
        continue;
      }
      if (n == '-' || n == '&') {
        if (n == '-') out.push_back('-');
        ++i;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::map<std::string, ManEntry> man_keys(const std::string& path) {
  std::map<std::string, ManEntry> keys;
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::string line;
  std::vector<std::string> sections, current;  // an .SS may name several
  bool after_tp = false;
  while (std::getline(in, line)) {
    if (line.rfind(".SH", 0) == 0) {
      sections.clear();
      current.clear();
    } else if (line.rfind(".SS", 0) == 0) {
      // .SS [smtp], .SS "[listener NAME]", or one subsection for several
      // sections: .SS "[schedule] and [peer NAME]".
      current.clear();
      sections.clear();
      for (size_t open = line.find('['); open != std::string::npos;
           open = line.find('[', open + 1)) {
        size_t end = line.find_first_of(" ]\\", open + 1);
        sections.push_back(line.substr(open + 1, end - open - 1));
      }
    } else if (line == ".TP") {
      after_tp = true;
      current.clear();
      continue;
    } else if (after_tp && line.rfind(".B ", 0) == 0 && !sections.empty()) {
      current.clear();
      for (const std::string& sec : sections) {
        current.push_back(sec + "." + plain(line.substr(3)));
        keys[current.back()];
      }
    } else if (!current.empty()) {
      std::string p = plain(line);
      size_t d = p.find("Default: ");
      if (d != std::string::npos) {
        std::string v = p.substr(d + 9);
        if (!v.empty() && v.back() == '.') v.pop_back();
        for (const std::string& name : current) {
          keys[name].has_default = true;
          keys[name].default_text = v == "none" ? "" : v;
        }
      }
    }
    after_tp = false;
  }
  return keys;
}

TEST(ConfigManPage, EveryRegistryKeyIsDocumentedWithItsDefault) {
  auto man = man_keys(FERRY_SOURCE_DIR "/man/ferry.conf.5");
  for (const ConfigKey& k : config_keys()) {
    std::string name = std::string(k.section) + "." + std::string(k.key);
    auto it = man.find(name);
    if (it == man.end()) {
      ADD_FAILURE() << name << " is in the registry but not in ferry.conf.5";
      continue;
    }
    EXPECT_TRUE(it->second.has_default) << name << ": no 'Default:' line";
    EXPECT_EQ(it->second.default_text, k.default_value) << name;
  }
}

TEST(ConfigManPage, EveryDocumentedKeyIsInTheRegistry) {
  std::set<std::string> registry;
  for (const ConfigKey& k : config_keys()) {
    registry.insert(std::string(k.section) + "." + std::string(k.key));
  }
  for (const auto& [name, entry] :
       man_keys(FERRY_SOURCE_DIR "/man/ferry.conf.5")) {
    EXPECT_TRUE(registry.count(name))
        << name << " is documented in ferry.conf.5 but unknown to ferryd";
  }
}

}  // namespace
}  // namespace ferry::gw

// Regression: a directory given as the config used to read as an empty
// file, and a missing file said only "cannot open" without the reason.
TEST(ConfigFile, LoadErrorsSayWhy) {
  using namespace ferry::gw;
  Config c;
  std::string error;
  EXPECT_FALSE(load_config("/", c, error));
  EXPECT_EQ(error, "/: is a directory, not a file");
  EXPECT_FALSE(load_config("/nonexistent/ferry.conf", c, error));
  EXPECT_EQ(error, "/nonexistent/ferry.conf: No such file or directory");
}
