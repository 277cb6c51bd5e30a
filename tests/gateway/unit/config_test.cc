#include "gateway/config.h"

#include <gtest/gtest.h>

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
  Config c = parse_ok("[listener l]\naddress = 127.0.0.1:25\n");
  auto eff = effective(c);
  for (const ConfigKey& k : config_keys()) {
    std::string sec = is_named_section(k.section)
                          ? "[" + std::string(k.section) + " l]"
                          : "[" + std::string(k.section) + "]";
    auto it = eff.find(sec + " " + std::string(k.key));
    ASSERT_NE(it, eff.end()) << sec << " " << k.key;
    if (k.key != "address") {
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
  std::string line, section, current;
  bool after_tp = false;
  while (std::getline(in, line)) {
    if (line.rfind(".SH", 0) == 0) {
      section.clear();
      current.clear();
    } else if (line.rfind(".SS", 0) == 0) {
      current.clear();
      size_t open = line.find('[');
      size_t end = line.find_first_of(" ]\\", open + 1);
      section = open == std::string::npos
                    ? ""
                    : line.substr(open + 1, end - open - 1);
    } else if (line == ".TP") {
      after_tp = true;
      current.clear();
      continue;
    } else if (after_tp && line.rfind(".B ", 0) == 0 && !section.empty()) {
      current = section + "." + plain(line.substr(3));
      keys[current];
    } else if (!current.empty()) {
      std::string p = plain(line);
      size_t d = p.find("Default: ");
      if (d != std::string::npos) {
        std::string v = p.substr(d + 9);
        if (!v.empty() && v.back() == '.') v.pop_back();
        keys[current].has_default = true;
        keys[current].default_text = v == "none" ? "" : v;
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
