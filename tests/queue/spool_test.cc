// Unit tests of the spool: records, ids, every recipient transition, the
// indexes, transfer ids, partial transfers, events, group commit, map growth
// and a full map.  Each test works in a fresh temporary directory.
#include "queue/spool.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "queue/records.h"

namespace ferry::queue {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string sha_hex(const std::string& s) {
  unsigned char md[32];
  unsigned int n = 0;
  EVP_Digest(s.data(), s.size(), md, &n, EVP_sha256(), nullptr);
  return records::hex(md, n);
}

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/spool-XXXXXX";
    path_ = ::mkdtemp(tmpl.data()) ? tmpl : "";
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class SpoolTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    opts_.log = false;
    Open();
  }

  void Open() {
    spool_.reset();
    std::error_code ec;
    spool_ = Spool::open(dir_.path(), opts_, ec);
    ASSERT_TRUE(spool_) << ec.message();
  }

  static NewMessage Message(std::string body,
                            std::vector<std::string> routes = {"peer"}) {
    NewMessage m;
    m.sender = "alice@example.test";
    m.envid = "env-1";
    m.ret = Ret::hdrs;
    m.priority = 2;
    m.body = std::move(body);
    int n = 0;
    for (auto& r : routes)
      m.recipients.push_back({"rcpt" + std::to_string(n++) + "@example.test",
                              "rfc822;orig@example.test",
                              notify_failure | notify_delay, r});
    return m;
  }

  QueueId Submit(std::string body = "Subject: x\r\n\r\nhello\r\n",
                 std::vector<std::string> routes = {"peer"}) {
    QueueId id;
    std::error_code ec = spool_->submit(Message(std::move(body), routes), id);
    EXPECT_FALSE(ec) << ec.message();
    return id;
  }

  std::error_code Do(const QueueId& id, uint32_t r, Action a,
                     std::string reply = "",
                     Clock::time_point when = Clock::time_point{},
                     bool* removed = nullptr) {
    Transition t{id, r, a, reply, when};
    if (a == Action::reroute) t.route = "backup";
    return spool_->transition(t, removed);
  }

  RecipientState StateOf(const QueueId& id, uint32_t r) {
    MessageInfo mi;
    EXPECT_FALSE(spool_->get(id, mi));
    return mi.recipients.at(r).state;
  }

  std::vector<std::string> EventTexts(const QueueId& id) {
    std::vector<Event> ev;
    EXPECT_FALSE(spool_->events(id, ev));
    std::vector<std::string> t;
    for (auto& e : ev) t.push_back(e.text);
    return t;
  }

  TempDir dir_;
  Options opts_;
  std::unique_ptr<Spool> spool_;
};

// ---- Records and ids. ----

TEST(RecordsTest, RoundTripAndRejectUnknownVersion) {
  records::RecipientRecord r;
  r.state = RecipientState::deferred;
  r.notify = 6;
  r.attempts = 3;
  r.next_attempt_us = 1234567;
  r.address = "a@b";
  r.route = "smarthost";
  r.last_reply = "451 4.3.0 later";
  std::string bytes = records::encode(r);
  records::RecipientRecord back;
  ASSERT_FALSE(records::decode(bytes, back));
  EXPECT_EQ(back.state, r.state);
  EXPECT_EQ(back.attempts, 3u);
  EXPECT_EQ(back.last_reply, r.last_reply);
  EXPECT_EQ(back.next_attempt_us, 1234567);

  std::string future = bytes;
  future[0] = 2;
  EXPECT_EQ(records::decode(future, back), spool_errc::version);
  EXPECT_EQ(records::decode(bytes.substr(0, bytes.size() - 1), back),
            spool_errc::corrupt);
  EXPECT_EQ(records::decode(bytes + "x", back), spool_errc::corrupt);
}

TEST(RecordsTest, QueueIdsSortByTimeThenCounter) {
  std::string a = records::format_queue_id(1'700'000'000'000'000, 0);
  std::string b = records::format_queue_id(1'700'000'000'000'000, 35);
  std::string c = records::format_queue_id(1'700'000'000'000'001, 0);
  EXPECT_EQ(a.size(), 16u);
  EXPECT_TRUE(records::valid_queue_id(a));
  EXPECT_LT(a, b);
  EXPECT_LT(b, c);
  EXPECT_FALSE(records::valid_queue_id("abc"));
  EXPECT_FALSE(records::valid_queue_id("../../etc/passwd"));
}

TEST_F(SpoolTest, SubmitThenGetReturnsEveryField) {
  std::string body = "Subject: hi\r\n\r\n" + std::string(5000, 'x') + "\r\n";
  QueueId id = Submit(body, {"peer", "local"});
  ASSERT_TRUE(records::valid_queue_id(id));

  MessageInfo mi;
  ASSERT_FALSE(spool_->get(id, mi));
  EXPECT_EQ(mi.id, id);
  EXPECT_EQ(mi.sender, "alice@example.test");
  EXPECT_EQ(mi.envid, "env-1");
  EXPECT_EQ(mi.ret, Ret::hdrs);
  EXPECT_EQ(mi.priority, 2);
  EXPECT_EQ(mi.size, body.size());
  EXPECT_LT(mi.stored_size, mi.size);  // compressed
  EXPECT_EQ(mi.sha256_hex, sha_hex(body));
  EXPECT_LE(Clock::now() - mi.arrival, 60s);
  ASSERT_EQ(mi.recipients.size(), 2u);
  EXPECT_EQ(mi.recipients[1].index, 1u);
  EXPECT_EQ(mi.recipients[1].address, "rcpt1@example.test");
  EXPECT_EQ(mi.recipients[1].orcpt, "rfc822;orig@example.test");
  EXPECT_EQ(mi.recipients[1].notify, notify_failure | notify_delay);
  EXPECT_EQ(mi.recipients[1].route, "local");
  EXPECT_EQ(mi.recipients[1].state, RecipientState::queued);

  std::string got;
  ASSERT_FALSE(spool_->read_body(id, got));
  EXPECT_EQ(got, body);

  // The stored body is a plain zstd frame of the same bytes.
  std::string stored;
  ASSERT_FALSE(spool_->read_stored_body(id, stored));
  EXPECT_EQ(stored.size(), mi.stored_size);
  std::string plain(body.size(), '\0');
  EXPECT_EQ(
      ZSTD_decompress(plain.data(), plain.size(), stored.data(), stored.size()),
      body.size());
  EXPECT_EQ(plain, body);
  EXPECT_EQ(EventTexts(id).at(0).rfind("status=queued", 0), 0u);
}

TEST_F(SpoolTest, MissingAndMalformedIdsAreNotFound) {
  MessageInfo mi;
  std::string b;
  EXPECT_EQ(spool_->get("0000000000000000", mi), spool_errc::not_found);
  EXPECT_EQ(spool_->get("../x", mi), spool_errc::not_found);
  EXPECT_EQ(spool_->read_body("0000000000000000", b), spool_errc::not_found);
  EXPECT_EQ(Do("0000000000000000", 0, Action::delivered),
            spool_errc::not_found);
}

TEST_F(SpoolTest, SubmitRefusesMessageWithoutRecipients) {
  NewMessage m = Message("x", {});
  QueueId id;
  EXPECT_EQ(spool_->submit(std::move(m), id), spool_errc::bad_state);
  EXPECT_TRUE(id.empty());
}

TEST_F(SpoolTest, QueueIdsAreUniqueAndSortByArrival) {
  std::vector<QueueId> seq;
  for (int i = 0; i < 50; ++i) seq.push_back(Submit());
  EXPECT_TRUE(std::is_sorted(seq.begin(), seq.end()));

  // Concurrent submitters: still unique.
  std::mutex mu;
  std::set<QueueId> ids(seq.begin(), seq.end());
  std::vector<std::thread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        QueueId id = Submit();
        std::lock_guard l(mu);
        ids.insert(id);
      }
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ids.size(), 250u);
  std::vector<MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  EXPECT_EQ(all.size(), 250u);
}

TEST_F(SpoolTest, CorpusMessagesRoundTripByteForByte) {
  fs::path corpus = fs::path(FERRY_SHARED_DIR) / "corpus" / "messages";
  if (!fs::is_directory(corpus)) GTEST_SKIP() << "no corpus at " << corpus;
  std::vector<fs::path> files;
  for (auto& e : fs::directory_iterator(corpus))
    if (e.path().extension() == ".eml") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  if (files.size() > 200) files.resize(200);
  std::map<QueueId, std::string> sent;
  for (auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    sent[Submit(ss.str())] = ss.str();
  }
  Open();  // and again after a reopen
  for (auto& [id, body] : sent) {
    std::string got;
    ASSERT_FALSE(spool_->read_body(id, got)) << id;
    EXPECT_EQ(got, body) << id;
  }
}

TEST_F(SpoolTest, SecondOpenInOneProcessSharesTheEnvironment) {
  QueueId id = Submit();
  std::error_code ec;
  auto again = Spool::open(dir_.path(), opts_, ec);
  ASSERT_TRUE(again) << ec.message();
  MessageInfo mi;
  EXPECT_FALSE(again->get(id, mi));
  QueueId id2;
  EXPECT_FALSE(again->submit(Message("two"), id2));
  again.reset();
  EXPECT_FALSE(spool_->get(id2, mi));
}

TEST(SpoolOpenTest, MissingDirectoryIsAnError) {
  Options o;
  o.log = false;
  std::error_code ec;
  EXPECT_FALSE(Spool::open("/nonexistent/ferry-spool-test", o, ec));
  EXPECT_EQ(ec, spool_errc::not_found);
}

TEST_F(SpoolTest, NewerFormatIsRefused) {
  spool_.reset();
  // Rewrite meta/format with a future version using LMDB directly.
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ASSERT_EQ(mdb_env_open(env, dir_.path().c_str(), 0, 0640), 0);
  MDB_txn* t;
  MDB_dbi meta;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &t), 0);
  ASSERT_EQ(mdb_dbi_open(t, "meta", 0, &meta), 0);
  uint32_t v = records::kFormatVersion + 1;
  MDB_val k{6, const_cast<char*>("format")}, val{4, &v};
  ASSERT_EQ(mdb_put(t, meta, &k, &val, 0), 0);
  ASSERT_EQ(mdb_txn_commit(t), 0);
  mdb_env_close(env);

  std::error_code ec;
  EXPECT_FALSE(Spool::open(dir_.path(), opts_, ec));
  EXPECT_EQ(ec, spool_errc::version);
}

TEST_F(SpoolTest, ReadOnlyHandleSharingAWritableOneStillRefusesWrites) {
  QueueId id = Submit();
  Options ro = opts_;
  ro.read_only = true;
  std::error_code ec;
  auto reader = Spool::open(dir_.path(), ro, ec);
  ASSERT_TRUE(reader) << ec.message();
  MessageInfo mi;
  EXPECT_FALSE(reader->get(id, mi));
  QueueId id2;
  EXPECT_EQ(reader->submit(Message("x"), id2), spool_errc::bad_state);
  EXPECT_EQ(reader->remove(id, "no"), spool_errc::bad_state);
  EXPECT_FALSE(spool_->remove(id, "yes"));
}

TEST_F(SpoolTest, TamperedBodyIsReportedCorruptNotReturned) {
  QueueId id = Submit("Subject: x\r\n\r\nthe real text\r\n");
  std::string other_stored;
  QueueId decoy = Submit("Subject: x\r\n\r\nsomething else\r\n");
  ASSERT_FALSE(spool_->read_stored_body(decoy, other_stored));
  spool_.reset();

  // Put another message's (valid) zstd frame under this id.
  MDB_env* env;
  ASSERT_EQ(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 16);
  ASSERT_EQ(mdb_env_open(env, dir_.path().c_str(), 0, 0640), 0);
  MDB_txn* t;
  MDB_dbi body;
  ASSERT_EQ(mdb_txn_begin(env, nullptr, 0, &t), 0);
  ASSERT_EQ(mdb_dbi_open(t, "body", 0, &body), 0);
  MDB_val k{id.size(), id.data()};
  MDB_val v{other_stored.size(), other_stored.data()};
  ASSERT_EQ(mdb_put(t, body, &k, &v, 0), 0);
  ASSERT_EQ(mdb_txn_commit(t), 0);
  mdb_env_close(env);

  Open();
  std::string got;
  EXPECT_EQ(spool_->read_body(id, got), spool_errc::corrupt);
  ASSERT_FALSE(spool_->read_body(decoy, got));
}

TEST_F(SpoolTest, ReadOnlyOpenReadsButRefusesWrites) {
  QueueId id = Submit();
  spool_.reset();
  opts_.read_only = true;
  Open();
  MessageInfo mi;
  EXPECT_FALSE(spool_->get(id, mi));
  QueueId id2;
  EXPECT_EQ(spool_->submit(Message("x"), id2), spool_errc::bad_state);
}

// ---- Transitions: every allowed and refused one. ----

// Brings recipient 0 of a fresh two-recipient message into `s`.
struct StateCase {
  RecipientState from;
  Action action;
  bool allowed;
  RecipientState to;
};
void PrintTo(const StateCase& c, std::ostream* os) {
  *os << to_string(c.from) << " + " << to_string(c.action);
}

class TransitionTable : public SpoolTest,
                        public ::testing::WithParamInterface<StateCase> {};

TEST_P(TransitionTable, AllowsExactlyTheDocumentedMoves) {
  const StateCase& c = GetParam();
  QueueId id = Submit("body", {"peer", "peer"});
  switch (c.from) {
    case RecipientState::queued:
      break;
    case RecipientState::in_flight:
      ASSERT_FALSE(Do(id, 0, Action::in_flight));
      break;
    case RecipientState::deferred:
      ASSERT_FALSE(Do(id, 0, Action::deferred, "451", Clock::now() + 1h));
      break;
    case RecipientState::held:
      ASSERT_FALSE(Do(id, 0, Action::hold));
      break;
    case RecipientState::delivered:
      ASSERT_FALSE(Do(id, 0, Action::delivered, "250"));
      break;
    case RecipientState::failed:
      ASSERT_FALSE(Do(id, 0, Action::failed, "550"));
      break;
  }
  ASSERT_EQ(StateOf(id, 0), c.from);
  std::error_code ec = Do(id, 0, c.action, "reply", Clock::now() + 2h);
  if (c.allowed) {
    EXPECT_FALSE(ec) << ec.message();
    EXPECT_EQ(StateOf(id, 0), c.to);
  } else {
    EXPECT_EQ(ec, spool_errc::bad_state);
    EXPECT_EQ(StateOf(id, 0), c.from);  // unchanged
  }
  EXPECT_EQ(StateOf(id, 1), RecipientState::queued);  // the other untouched
}

using RS = RecipientState;
using A = Action;
INSTANTIATE_TEST_SUITE_P(
    Spool, TransitionTable,
    ::testing::Values(
        StateCase{RS::queued, A::in_flight, true, RS::in_flight},
        StateCase{RS::queued, A::delivered, true, RS::delivered},
        StateCase{RS::queued, A::deferred, true, RS::deferred},
        StateCase{RS::queued, A::failed, true, RS::failed},
        StateCase{RS::queued, A::hold, true, RS::held},
        StateCase{RS::queued, A::release, false, RS::queued},
        StateCase{RS::queued, A::retry_now, true, RS::queued},
        StateCase{RS::queued, A::reroute, true, RS::queued},
        StateCase{RS::in_flight, A::in_flight, false, RS::in_flight},
        StateCase{RS::in_flight, A::delivered, true, RS::delivered},
        StateCase{RS::in_flight, A::deferred, true, RS::deferred},
        StateCase{RS::in_flight, A::failed, true, RS::failed},
        StateCase{RS::in_flight, A::hold, false, RS::in_flight},
        StateCase{RS::in_flight, A::release, false, RS::in_flight},
        StateCase{RS::in_flight, A::retry_now, false, RS::in_flight},
        StateCase{RS::in_flight, A::reroute, false, RS::in_flight},
        StateCase{RS::deferred, A::in_flight, true, RS::in_flight},
        StateCase{RS::deferred, A::delivered, true, RS::delivered},
        StateCase{RS::deferred, A::deferred, true, RS::deferred},
        StateCase{RS::deferred, A::failed, true, RS::failed},
        StateCase{RS::deferred, A::hold, true, RS::held},
        StateCase{RS::deferred, A::release, false, RS::deferred},
        StateCase{RS::deferred, A::retry_now, true, RS::queued},
        StateCase{RS::deferred, A::reroute, true, RS::queued},
        StateCase{RS::held, A::in_flight, false, RS::held},
        StateCase{RS::held, A::delivered, false, RS::held},
        StateCase{RS::held, A::deferred, false, RS::held},
        StateCase{RS::held, A::failed, true, RS::failed},
        StateCase{RS::held, A::hold, false, RS::held},
        StateCase{RS::held, A::release, true, RS::queued},
        StateCase{RS::held, A::retry_now, false, RS::held},
        StateCase{RS::held, A::reroute, false, RS::held},
        StateCase{RS::delivered, A::in_flight, false, RS::delivered},
        StateCase{RS::delivered, A::delivered, false, RS::delivered},
        StateCase{RS::delivered, A::deferred, false, RS::delivered},
        StateCase{RS::delivered, A::failed, false, RS::delivered},
        StateCase{RS::delivered, A::hold, false, RS::delivered},
        StateCase{RS::delivered, A::release, false, RS::delivered},
        StateCase{RS::delivered, A::retry_now, false, RS::delivered},
        StateCase{RS::delivered, A::reroute, false, RS::delivered},
        StateCase{RS::failed, A::in_flight, false, RS::failed},
        StateCase{RS::failed, A::delivered, false, RS::failed},
        StateCase{RS::failed, A::deferred, false, RS::failed},
        StateCase{RS::failed, A::failed, false, RS::failed},
        StateCase{RS::failed, A::hold, false, RS::failed},
        StateCase{RS::failed, A::release, false, RS::failed},
        StateCase{RS::failed, A::retry_now, false, RS::failed},
        StateCase{RS::failed, A::reroute, false, RS::failed}));

TEST_F(SpoolTest, RerouteMovesARecipientToAnotherRouteAndKeepsItsAttempts) {
  QueueId id = Submit("b", {"peer", "peer"});
  ASSERT_FALSE(Do(id, 0, Action::in_flight));
  ASSERT_FALSE(
      Do(id, 0, Action::deferred, "451 4.3.0 busy", Clock::now() + 1h));
  Transition t{id, 0, Action::reroute, "", Clock::time_point{}};
  t.route = "backup";
  ASSERT_FALSE(spool_->transition(t));
  MessageInfo mi;
  ASSERT_FALSE(spool_->get(id, mi));
  EXPECT_EQ(mi.recipients[0].route, "backup");
  EXPECT_EQ(mi.recipients[0].state, RecipientState::queued);
  EXPECT_EQ(mi.recipients[0].attempts, 1u);
  EXPECT_EQ(mi.recipients[1].route, "peer");
  // Both route indexes and the due index follow.
  std::vector<QueueId> ids;
  ASSERT_FALSE(spool_->route_messages("backup", ids));
  EXPECT_EQ(ids, std::vector<QueueId>{id});
  ASSERT_FALSE(spool_->route_messages("peer", ids));
  EXPECT_EQ(ids, std::vector<QueueId>{id});  // recipient 1 is still there
  std::vector<DueEntry> due;
  ASSERT_FALSE(spool_->due(Clock::now() + 1s, 0, due));
  ASSERT_EQ(due.size(), 2u);
  EXPECT_NE(EventTexts(id).back().find("route=backup from_route=peer"),
            std::string::npos);
  // An empty route name is refused and changes nothing.
  t.recipient = 1;
  t.route.clear();
  EXPECT_EQ(spool_->transition(t), spool_errc::bad_state);
  ASSERT_FALSE(spool_->get(id, mi));
  EXPECT_EQ(mi.recipients[1].route, "peer");
}

TEST_F(SpoolTest, OutcomesCountAttemptsAndKeepTheReply) {
  QueueId id = Submit("b", {"peer", "peer"});
  Clock::time_point next = Clock::now() + 30min;
  ASSERT_FALSE(Do(id, 0, Action::in_flight));
  ASSERT_FALSE(Do(id, 0, Action::deferred, "421 4.4.2 dropped", next));
  ASSERT_FALSE(Do(id, 0, Action::in_flight));
  ASSERT_FALSE(Do(id, 0, Action::deferred, "451 4.3.0 busy", next + 1h));
  MessageInfo mi;
  ASSERT_FALSE(spool_->get(id, mi));
  EXPECT_EQ(mi.recipients[0].attempts, 2u);
  EXPECT_EQ(mi.recipients[0].last_reply, "451 4.3.0 busy");
  EXPECT_EQ(records::to_us(mi.recipients[0].next_attempt),
            records::to_us(next + 1h));
  EXPECT_EQ(mi.recipients[1].attempts, 0u);
  auto ev = EventTexts(id);
  EXPECT_NE(ev.back().find("status=deferred reply=451 4.3.0 busy"),
            std::string::npos);
}

TEST_F(SpoolTest, MessageLeavesOnlyWhenEveryRecipientIsFinal) {
  QueueId id = Submit("b", {"peer", "smarthost", "local"});
  std::string tid;
  ASSERT_FALSE(spool_->transfer_id_for(id, "peer", tid));
  bool removed = true;
  ASSERT_FALSE(Do(id, 0, Action::delivered, "250", {}, &removed));
  EXPECT_FALSE(removed);
  ASSERT_FALSE(Do(id, 1, Action::failed, "550 no", {}, &removed));
  EXPECT_FALSE(removed);
  MessageInfo mi;
  ASSERT_FALSE(spool_->get(id, mi));  // still here: one is queued

  ASSERT_FALSE(Do(id, 2, Action::delivered, "250", {}, &removed));
  EXPECT_TRUE(removed);
  std::string b;
  EXPECT_EQ(spool_->get(id, mi), spool_errc::not_found);
  EXPECT_EQ(spool_->read_body(id, b), spool_errc::not_found);
  EXPECT_EQ(spool_->read_stored_body(id, b), spool_errc::not_found);
  EXPECT_EQ(spool_->transfer_id_for(id, "peer", tid), spool_errc::not_found);
  std::vector<DueEntry> due;
  ASSERT_FALSE(spool_->due(Clock::now() + 1000h, 0, due));
  EXPECT_TRUE(due.empty());
  std::vector<RouteStats> rs;
  ASSERT_FALSE(spool_->route_stats(rs));
  EXPECT_TRUE(rs.empty());
  SpoolStats st;
  ASSERT_FALSE(spool_->stats(st));
  EXPECT_EQ(st.messages, 0u);
  EXPECT_EQ(st.recipients_by_state[0] + st.recipients_by_state[2], 0u);
  // Its history stays for ferryctl.
  EXPECT_NE(EventTexts(id).back().find("status=removed"), std::string::npos);
}

TEST_F(SpoolTest, ApplyReportsEachTransitionSeparately) {
  QueueId a = Submit("a"), b = Submit("b");
  std::vector<TransitionResult> res;
  ASSERT_FALSE(spool_->apply({{a, 0, Action::delivered, "250"},
                              {b, 0, Action::release},
                              {b, 7, Action::delivered},
                              {b, 0, Action::in_flight}},
                             res));
  ASSERT_EQ(res.size(), 4u);
  EXPECT_FALSE(res[0].ec);
  EXPECT_TRUE(res[0].message_removed);
  EXPECT_EQ(res[1].ec, spool_errc::bad_state);
  EXPECT_EQ(res[2].ec, spool_errc::not_found);
  EXPECT_FALSE(res[3].ec);
  EXPECT_EQ(StateOf(b, 0), RecipientState::in_flight);
}

TEST_F(SpoolTest, PostmasterDeleteRemovesWhateverTheState) {
  QueueId id = Submit("b", {"peer", "peer"});
  ASSERT_FALSE(Do(id, 0, Action::in_flight));
  ASSERT_FALSE(Do(id, 1, Action::hold));
  ASSERT_FALSE(spool_->remove(id, "spam"));
  MessageInfo mi;
  EXPECT_EQ(spool_->get(id, mi), spool_errc::not_found);
  EXPECT_EQ(spool_->remove(id, "again"), spool_errc::not_found);
  EXPECT_NE(EventTexts(id).back().find("reason=postmaster:spam"),
            std::string::npos);
}

TEST_F(SpoolTest, RequeueInFlightAfterCrashMakesThemDueNow) {
  QueueId id = Submit("b", {"peer", "peer"});
  ASSERT_FALSE(Do(id, 0, Action::in_flight));
  ASSERT_FALSE(Do(id, 1, Action::hold));
  Open();  // as ferryd would after a restart
  size_t n = 0;
  Clock::time_point now = Clock::now() + 5min;
  ASSERT_FALSE(spool_->requeue_in_flight(now, n));
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(StateOf(id, 0), RecipientState::queued);
  EXPECT_EQ(StateOf(id, 1), RecipientState::held);
  std::vector<DueEntry> due;
  ASSERT_FALSE(spool_->due(now, 0, due));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(records::to_us(due[0].due), records::to_us(now));
}

// ---- Indexes. ----

TEST_F(SpoolTest, DueIndexOrdersByTimeAndFollowsTransitions) {
  QueueId a = Submit("a", {"peer"});
  QueueId b = Submit("b", {"smarthost", "peer"});
  Clock::time_point now = Clock::now();

  std::vector<DueEntry> due;
  ASSERT_FALSE(spool_->due(now + 1s, 0, due));
  ASSERT_EQ(due.size(), 3u);
  EXPECT_EQ(due[0].id, a);
  EXPECT_EQ(due[1].id, b);
  EXPECT_EQ(due[1].route, "smarthost");
  EXPECT_EQ(due[2].recipient, 1u);
  ASSERT_FALSE(spool_->due(now + 1s, 2, due));
  EXPECT_EQ(due.size(), 2u);  // the limit

  // Deferred: due at its next attempt, not before.  Held, in flight: never.
  ASSERT_FALSE(Do(a, 0, Action::deferred, "451", now + 1h));
  ASSERT_FALSE(Do(b, 0, Action::hold));
  ASSERT_FALSE(Do(b, 1, Action::in_flight));
  ASSERT_FALSE(spool_->due(now + 59min, 0, due));
  EXPECT_TRUE(due.empty());
  std::optional<Clock::time_point> first;
  ASSERT_FALSE(spool_->earliest_due(first));
  ASSERT_TRUE(first);
  EXPECT_EQ(records::to_us(*first), records::to_us(now + 1h));
  ASSERT_FALSE(spool_->due(now + 1h, 0, due));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].id, a);

  // retry_now and release make them due at the given time.
  ASSERT_FALSE(Do(a, 0, Action::retry_now, "", now + 1min));
  ASSERT_FALSE(Do(b, 0, Action::release, "", now + 2min));
  ASSERT_FALSE(spool_->due(now + 10min, 0, due));
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].id, a);
  EXPECT_EQ(due[1].id, b);

  ASSERT_FALSE(Do(a, 0, Action::delivered));
  ASSERT_FALSE(Do(b, 0, Action::delivered));
  ASSERT_FALSE(Do(b, 1, Action::delivered));
  ASSERT_FALSE(spool_->earliest_due(first));
  EXPECT_FALSE(first);
}

TEST_F(SpoolTest, RouteIndexGivesBatchesCountsAndBytes) {
  QueueId a = Submit(std::string(1000, 'a'), {"east", "west"});
  QueueId b = Submit(std::string(3000, 'b'), {"east", "east"});
  QueueId c = Submit(std::string(10, 'c'), {"west"});

  std::vector<QueueId> ids;
  ASSERT_FALSE(spool_->route_messages("east", ids));
  EXPECT_EQ(ids, (std::vector<QueueId>{a, b}));
  ASSERT_FALSE(spool_->route_messages("west", ids));
  EXPECT_EQ(ids, (std::vector<QueueId>{a, c}));
  ASSERT_FALSE(spool_->route_messages("nowhere", ids));
  EXPECT_TRUE(ids.empty());

  std::vector<RouteStats> rs;
  ASSERT_FALSE(spool_->route_stats(rs));
  ASSERT_EQ(rs.size(), 2u);
  EXPECT_EQ(rs[0].route, "east");
  EXPECT_EQ(rs[0].messages, 2u);
  EXPECT_EQ(rs[0].recipients, 3u);
  EXPECT_EQ(rs[0].bytes, 4000u);
  EXPECT_GT(rs[0].stored_bytes, 0u);
  EXPECT_EQ(rs[0].max_priority, 2);
  EXPECT_EQ(rs[1].route, "west");
  EXPECT_EQ(rs[1].bytes, 1010u);

  // In flight leaves the batch; deferred stays in it.
  ASSERT_FALSE(Do(a, 0, Action::in_flight));
  ASSERT_FALSE(Do(b, 0, Action::deferred, "451", Clock::now() + 1h));
  ASSERT_FALSE(spool_->route_messages("east", ids));
  EXPECT_EQ(ids, (std::vector<QueueId>{b}));
  ASSERT_FALSE(spool_->route_stats(rs));
  EXPECT_EQ(rs[0].recipients, 2u);
  EXPECT_EQ(rs[0].messages, 1u);
}

// ---- Transfer ids. ----

TEST_F(SpoolTest, TransferIdIsStablePerMessageAndPeer) {
  QueueId id = Submit();
  std::string t1, t2, t3;
  ASSERT_FALSE(spool_->transfer_id_for(id, "branch", t1));
  ASSERT_FALSE(spool_->transfer_id_for(id, "branch", t2));
  ASSERT_FALSE(spool_->transfer_id_for(id, "isp", t3));
  EXPECT_EQ(t1.size(), 32u);
  EXPECT_EQ(t1, t2);
  EXPECT_NE(t1, t3);
  Open();
  ASSERT_FALSE(spool_->transfer_id_for(id, "branch", t2));
  EXPECT_EQ(t1, t2);  // survives a restart
  EXPECT_EQ(spool_->transfer_id_for("0000000000000000", "branch", t2),
            spool_errc::not_found);
}

TEST_F(SpoolTest, ReceivedTransferIdIsAcceptedExactlyOnce) {
  NewMessage m = Message("first copy");
  m.received_transfer_id = "abc123";
  m.received_from_peer = "branch";
  QueueId id;
  ASSERT_FALSE(spool_->submit(m, id));
  QueueId found;
  ASSERT_FALSE(spool_->lookup_received("branch", "abc123", found));
  EXPECT_EQ(found, id);
  EXPECT_EQ(spool_->lookup_received("other", "abc123", found),
            spool_errc::not_found);
  EXPECT_EQ(spool_->lookup_received("branch", "zzz", found),
            spool_errc::not_found);

  // The same transfer again (a lost reply, a resent message): refused and
  // pointed at the first copy; nothing new is stored.
  QueueId again;
  m.body = "second copy";
  EXPECT_EQ(spool_->submit(m, again), spool_errc::bad_state);
  EXPECT_EQ(again, id);
  std::vector<MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  EXPECT_EQ(all.size(), 1u);

  // Still known after the message itself has left.
  ASSERT_FALSE(Do(id, 0, Action::delivered));
  ASSERT_FALSE(spool_->lookup_received("branch", "abc123", found));
  EXPECT_EQ(found, id);
}

TEST_F(SpoolTest, ExpiryForgetsOnlyOldReceivedIds) {
  opts_.transfer_id_lifetime = std::chrono::hours(24);
  Open();
  NewMessage m = Message("x");
  m.received_from_peer = "branch";
  m.received_transfer_id = "old";
  QueueId id;
  ASSERT_FALSE(spool_->submit(m, id));
  Clock::time_point t0 = Clock::now();

  size_t n = 99;
  ASSERT_FALSE(spool_->expire(t0 + 23h, n));
  EXPECT_EQ(n, 0u);
  QueueId found;
  EXPECT_FALSE(spool_->lookup_received("branch", "old", found));

  // A later arrival, then a clock past the first one's lifetime.
  std::this_thread::sleep_for(5ms);
  m.received_transfer_id = "new";
  ASSERT_FALSE(spool_->submit(m, id));
  ASSERT_FALSE(spool_->expire(t0 + 24h + 2ms, n));
  EXPECT_EQ(n, 1u);
  EXPECT_EQ(spool_->lookup_received("branch", "old", found),
            spool_errc::not_found);
  EXPECT_FALSE(spool_->lookup_received("branch", "new", found));
  SpoolStats st;
  ASSERT_FALSE(spool_->stats(st));
  EXPECT_EQ(st.received_transfer_ids, 1u);
}

// ---- Partial transfers. ----

TEST_F(SpoolTest, PartialTransferResumesAcrossRestart) {
  uint64_t size = 7;
  EXPECT_EQ(spool_->partial_size("branch", "t1", size), spool_errc::not_found);
  EXPECT_EQ(size, 0u);
  ASSERT_FALSE(spool_->partial_append("branch", "t1", 0, "hello "));
  ASSERT_FALSE(spool_->partial_append("branch", "t1", 6, "wor"));
  ASSERT_FALSE(spool_->partial_append("branch", "t2", 0, "other"));
  // A resume from the wrong offset would corrupt the body: refused.
  EXPECT_EQ(spool_->partial_append("branch", "t1", 6, "XXX"),
            spool_errc::bad_state);
  EXPECT_EQ(spool_->partial_append("branch", "t1", 100, "XXX"),
            spool_errc::bad_state);

  Open();
  ASSERT_FALSE(spool_->partial_size("branch", "t1", size));
  EXPECT_EQ(size, 9u);
  ASSERT_FALSE(spool_->partial_append("branch", "t1", 9, "ld"));
  std::string bytes;
  ASSERT_FALSE(spool_->partial_get("branch", "t1", bytes));
  EXPECT_EQ(bytes, "hello world");
  SpoolStats st;
  ASSERT_FALSE(spool_->stats(st));
  EXPECT_EQ(st.partials, 2u);

  ASSERT_FALSE(spool_->partial_drop("branch", "t1"));
  EXPECT_EQ(spool_->partial_get("branch", "t1", bytes), spool_errc::not_found);
  EXPECT_EQ(spool_->partial_drop("branch", "t1"), spool_errc::not_found);
  ASSERT_FALSE(spool_->partial_get("branch", "t2", bytes));
  EXPECT_EQ(bytes, "other");
}

TEST_F(SpoolTest, CompletedTransferDropsItsPartialInTheSameCommit) {
  ASSERT_FALSE(spool_->partial_append("branch", "t9", 0, "half a mess"));
  NewMessage m = Message("half a message, now whole");
  m.received_from_peer = "branch";
  m.received_transfer_id = "t9";
  QueueId id;
  ASSERT_FALSE(spool_->submit(m, id));
  std::string bytes;
  EXPECT_EQ(spool_->partial_get("branch", "t9", bytes), spool_errc::not_found);
}

// ---- Event log and calls. ----

TEST_F(SpoolTest, EventsAndCallsAreKeptInOrderAndExpire) {
  QueueId id = Submit();
  ASSERT_FALSE(spool_->log_event(id, "note=checked"));
  auto ev = EventTexts(id);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1], "note=checked");

  Clock::time_point t0 = Clock::now();
  CallRecord c1{0, "branch", t0 - 2h, t0 - 2h + 5min, 1000, 2000, 3, 4, "ok"};
  CallRecord c2{0, "isp", t0 - 1min, t0, 10, 20, 1, 0, "busy"};
  ASSERT_FALSE(spool_->log_call(c1));
  ASSERT_FALSE(spool_->log_call(c2));
  EXPECT_LT(c1.seq, c2.seq);
  std::vector<CallRecord> calls;
  ASSERT_FALSE(spool_->calls(0, calls));
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].peer, "branch");
  EXPECT_EQ(calls[0].bytes_in, 2000u);
  EXPECT_EQ(calls[0].messages_in, 4u);
  EXPECT_EQ(calls[1].result, "busy");
  ASSERT_FALSE(spool_->calls(1, calls));
  ASSERT_EQ(calls.size(), 1u);
  EXPECT_EQ(calls[0].peer, "isp");

  // Event lifetime 30 days by default: a clock 31 days on drops the calls
  // and the events of messages that have left, not of those still here.
  QueueId gone = Submit();
  ASSERT_FALSE(Do(gone, 0, Action::delivered));
  size_t n = 0;
  ASSERT_FALSE(spool_->expire(t0 + 24h * 31, n));
  EXPECT_EQ(n, 2u + 3u);  // two calls; queued, delivered, removed events
  EXPECT_EQ(EventTexts(id).size(), 2u);
  EXPECT_TRUE(EventTexts(gone).empty());
  ASSERT_FALSE(spool_->calls(0, calls));
  EXPECT_TRUE(calls.empty());
}

// ---- Group commit, failed sync, map growth, full map. ----

TEST_F(SpoolTest, ConcurrentSubmittersShareCommits) {
  // The first batch is held back a little so that others queue behind it.
  std::atomic<int> batches{0};
  opts_.before_commit_hook = [&]() -> std::error_code {
    if (batches++ == 0) std::this_thread::sleep_for(100ms);
    return {};
  };
  Open();
  std::vector<std::thread> ts;
  std::atomic<int> ok{0};
  for (int t = 0; t < 20; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 5; ++i)
        if (!Submit().empty()) ok++;
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok.load(), 100);
  SpoolStats st;
  ASSERT_FALSE(spool_->stats(st));
  EXPECT_EQ(st.batched_ops, 100u);
  EXPECT_LT(st.batches, 100u);
  EXPECT_GT(st.largest_batch, 1u);
}

TEST_F(SpoolTest, SlowSyncTellsNoSubmitterDurableBeforeItEnds) {
  using Steady = std::chrono::steady_clock;
  std::atomic<int64_t> sync_end{0};
  std::atomic<int> batch{0};
  opts_.before_commit_hook = [&]() -> std::error_code {
    if (batch++ == 0) {
      std::this_thread::sleep_for(300ms);
      sync_end = Steady::now().time_since_epoch().count();
    }
    return {};
  };
  Open();
  std::vector<std::thread> ts;
  std::vector<int64_t> told(10);
  for (int i = 0; i < 10; ++i)
    ts.emplace_back([&, i] {
      Submit();
      told[i] = Steady::now().time_since_epoch().count();
    });
  for (auto& t : ts) t.join();
  ASSERT_GT(sync_end.load(), 0);
  for (int64_t t : told) EXPECT_GE(t, sync_end.load());
}

TEST_F(SpoolTest, FailedSyncFailsEveryoneInTheBatchAndStoresNothing) {
  // Batch 1 is slow (others queue up behind it); batch 2 "fails its sync".
  std::atomic<int> batch{0};
  opts_.before_commit_hook = [&]() -> std::error_code {
    int n = batch++;
    if (n == 0) std::this_thread::sleep_for(200ms);
    if (n == 1) return std::make_error_code(std::errc::io_error);
    return {};
  };
  Open();
  std::mutex mu;
  std::vector<std::pair<std::error_code, QueueId>> results;
  std::atomic<int> pending{30};
  std::promise<void> all_done;
  for (int i = 0; i < 30; ++i) {
    spool_->submit_async(Message("m" + std::to_string(i)),
                         [&](std::error_code ec, QueueId id) {
                           std::lock_guard l(mu);
                           results.push_back({ec, id});
                           if (--pending == 0) all_done.set_value();
                         });
    if (i == 0) std::this_thread::sleep_for(20ms);  // first batch alone
  }
  all_done.get_future().wait();

  size_t failed = 0, durable = 0;
  for (auto& [ec, id] : results) {
    MessageInfo mi;
    if (ec) {
      EXPECT_EQ(ec, spool_errc::sync_failed);
      EXPECT_TRUE(id.empty());
      failed++;
    } else {
      EXPECT_FALSE(spool_->get(id, mi)) << "told durable but absent: " << id;
      durable++;
    }
  }
  EXPECT_GT(failed, 1u);  // a whole batch, not one
  std::vector<MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  EXPECT_EQ(all.size(), durable);  // nothing of the failed batch is stored

  // And the spool carries on.
  QueueId id;
  EXPECT_FALSE(spool_->submit(Message("after"), id));
}

TEST_F(SpoolTest, MapGrowsWhenFullInsteadOfFailing) {
  opts_.initial_map_size = 1u << 20;
  Open();
  std::map<QueueId, std::string> sent;
  for (int i = 0; i < 40; ++i) {
    std::string body = random_bytes(200 * 1024, i);  // incompressible
    sent[Submit(body)] = body;
  }
  SpoolStats st;
  ASSERT_FALSE(spool_->stats(st));
  EXPECT_GE(st.map_size, 8u << 20);
  Open();
  for (auto& [id, body] : sent) {
    std::string got;
    ASSERT_FALSE(spool_->read_body(id, got));
    EXPECT_EQ(got, body);
  }
}

TEST_F(SpoolTest, FullMapIsCleanTemporaryErrorNeverCorruption) {
  opts_.initial_map_size = 2u << 20;
  opts_.max_map_size = 2u << 20;
  Open();
  std::map<QueueId, std::string> sent;
  std::error_code ec;
  for (int i = 0; i < 200 && !ec; ++i) {
    std::string body = random_bytes(64 * 1024, i);
    QueueId id;
    ec = spool_->submit(Message(body), id);
    if (!ec) sent[id] = body;
  }
  ASSERT_EQ(ec, spool_errc::disk_full);
  ASSERT_GT(sent.size(), 5u);

  // Everything told durable is intact, also after a reopen.
  Open();
  std::vector<MessageInfo> all;
  ASSERT_FALSE(spool_->list(all));
  EXPECT_EQ(all.size(), sent.size());
  for (auto& [id, body] : sent) {
    std::string got;
    ASSERT_FALSE(spool_->read_body(id, got));
    EXPECT_EQ(got, body);
  }

  // Deliveries free room and submits work again.
  for (auto it = sent.begin(); it != sent.end() && sent.size() > 2;)
    if (!Do(it->first, 0, Action::delivered)) it = sent.erase(it);
  QueueId id;
  EXPECT_FALSE(spool_->submit(Message(random_bytes(64 * 1024, 999)), id));
}

}  // namespace
}  // namespace ferry::queue
