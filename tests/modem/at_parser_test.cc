// Result parser against transcripts of what real modems send (HAYES.md §3,
// §4, §13): each case is the byte stream a modem produced for one exchange
// and the classified results the driver must see, in order.
#include "modem/at_parser.h"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

namespace ferry::modem {
namespace {

struct Transcript {
  const char* name;
  const char* command;  // what the driver sent (for echo recognition)
  std::string bytes;    // what the modem sent back
  std::vector<ResultKind> want;
};

// Names the transcript in test output instead of a byte dump of the struct
// (which also made every ctest line hundreds of columns wide).
void PrintTo(const Transcript& t, std::ostream* os) { *os << t.name; }

using K = ResultKind;

std::vector<AtResult> parse_all(const std::string& bytes,
                                const std::string& command, std::size_t chunk) {
  ResultParser p;
  p.expect_echo(command);
  std::vector<AtResult> out;
  for (std::size_t i = 0; i < bytes.size(); i += chunk) {
    p.feed(std::string_view(bytes).substr(i, chunk));
    while (auto r = p.next()) out.push_back(*r);
  }
  return out;
}

const std::vector<Transcript>& transcripts() {
  static const std::vector<Transcript> t = {
      // Basic verbose results, echo off (E0 V1).
      {"ok_verbose", "AT", "\r\nOK\r\n", {K::ok}},
      {"error_verbose", "ATX9", "\r\nERROR\r\n", {K::error}},
      {"busy", "ATDT5551234", "\r\nBUSY\r\n", {K::busy}},
      {"no_carrier", "ATDT5551234", "\r\nNO CARRIER\r\n", {K::no_carrier}},
      {"no_dialtone_hayes",
       "ATDT5551234",
       "\r\nNO DIALTONE\r\n",
       {K::no_dialtone}},
      {"no_dial_tone_usr",
       "ATDT5551234",
       "\r\nNO DIAL TONE\r\n",
       {K::no_dialtone}},
      {"no_answer", "ATDT5551234@", "\r\nNO ANSWER\r\n", {K::no_answer}},
      {"delayed", "ATDT5551234", "\r\nDELAYED\r\n", {K::delayed}},
      {"delayed_with_time",
       "ATDT5551234",
       "\r\nDELAYED 00:45\r\n",
       {K::delayed}},
      {"blacklisted", "ATDT5551234", "\r\nBLACKLISTED\r\n", {K::blacklisted}},
      {"voice_usr", "ATDT5551234", "\r\nVOICE\r\n", {K::voice}},
      {"ringing_then_connect_usr",
       "ATDT5551234",
       "\r\nRINGING\r\n\r\nRINGING\r\n\r\nCONNECT 28800/ARQ\r\n",
       {K::ringing, K::ringing, K::connect}},
      {"unknown_no_word", "ATDT5551234", "\r\nNO LINE\r\n", {K::no_other}},
      // Echo on (E1): the command comes back first, with its CR.
      {"echo_ok", "ATZ", "ATZ\r\r\nOK\r\n", {K::echo, K::ok}},
      {"echo_lower_case", "ate0", "ate0\r\r\nOK\r\n", {K::echo, K::ok}},
      {"echo_dial_busy",
       "ATDT5551234",
       "ATDT5551234\r\r\nBUSY\r\n",
       {K::echo, K::busy}},
      {"echo_of_other_at_line", "ATH", "AT&F\r\r\nOK\r\n", {K::echo, K::ok}},
      // Numeric results (V0): digits and CR, no LF, nothing before.
      {"numeric_ok", "ATV0", "0\r", {K::ok}},
      {"numeric_connect", "ATD5", "1\r", {K::connect}},
      {"numeric_busy", "ATD5", "7\r", {K::busy}},
      {"numeric_no_dialtone", "ATD5", "6\r", {K::no_dialtone}},
      {"numeric_no_answer", "ATD5", "8\r", {K::no_answer}},
      {"numeric_ring_then_connect",
       "",
       "2\r2\r10\r",
       {K::ring, K::ring, K::connect}},
      {"numeric_echo_on", "ATS9=20", "ATS9=20\r0\r", {K::echo, K::ok}},
      {"atz_answers_in_stored_numeric_form",
       "ATZ",
       "ATZ\r0\r",
       {K::echo, K::ok}},
      // CONNECT forms.
      {"connect_plain_x0", "ATDT5", "\r\nCONNECT\r\n", {K::connect}},
      {"connect_33600", "ATDT5", "\r\nCONNECT 33600\r\n", {K::connect}},
      {"connect_usr_arq", "ATDT5", "\r\nCONNECT 14400/ARQ\r\n", {K::connect}},
      {"connect_full_suffix",
       "ATDT5",
       "\r\nCONNECT 33600/ARQ/V34/LAPM/V42BIS\r\n",
       {K::connect}},
      {"connect_rel", "ATDT5", "\r\nCONNECT 9600/REL\r\n", {K::connect}},
      {"connect_zyxel",
       "ATDT5",
       "\r\nCONNECT 38400/V.32bis 14400/V.42bis\r\n",
       {K::connect}},
      {"w1_progress_lines",
       "ATDT5",
       "\r\nCARRIER 14400\r\n\r\nPROTOCOL: LAP-M\r\n"
       "\r\nCOMPRESSION: V.42BIS\r\n\r\nCONNECT 57600\r\n",
       {K::carrier, K::protocol, K::compression, K::connect}},
      {"w1_protocol_none",
       "ATDT5",
       "\r\nCARRIER 2400\r\n\r\nPROTOCOL: NONE\r\n\r\nCONNECT 2400\r\n",
       {K::carrier, K::protocol, K::connect}},
      // RING at awkward moments (HAYES §13.3).
      {"ring_between_command_and_ok",
       "ATS0=0",
       "\r\nRING\r\n\r\nOK\r\n",
       {K::ring, K::ok}},
      {"ring_after_echo",
       "ATI",
       "ATI\r\r\nRING\r\n\r\n14400\r\n\r\nOK\r\n",
       {K::echo, K::ring, K::info, K::ok}},
      {"rings_then_answer",
       "ATA",
       "\r\nRING\r\n\r\nRING\r\nATA\r\r\nCONNECT 33600\r\n",
       {K::ring, K::ring, K::echo, K::connect}},
      {"caller_id_after_ring",
       "",
       "\r\nRING\r\n\r\nDATE = 1204\r\nTIME = 1830\r\nNMBR = 5551234\r\n",
       {K::ring, K::info, K::info, K::info}},
      // Information text.
      {"s_register_read", "ATS0?", "\r\n000\r\n\r\nOK\r\n", {K::info, K::ok}},
      {"ati_multi_line",
       "ATI4",
       "\r\na007840284C6002F\r\nbC60000000\r\n\r\nOK\r\n",
       {K::info, K::info, K::ok}},
      {"cme_error", "AT+CBST", "\r\n+CME ERROR: 4\r\n", {K::error}},
      // Line noise and strange framing.
      {"garbage_before_ok",
       "AT",
       "\xff\xfe\x01\r\n\r\nOK\r\n",
       {K::garbage, K::ok}},
      {"lf_only_framing", "AT", "\nOK\n", {K::ok}},
      {"cr_only_framing", "AT", "\rOK\r", {K::ok}},
      {"leading_spaces", "AT", "\r\n OK \r\n", {K::ok}},
      {"lower_case_result", "AT", "\r\nok\r\n", {K::ok}},
      {"hangup_no_carrier_then_ok",
       "ATH",
       "\r\nNO CARRIER\r\n\r\nOK\r\n",
       {K::no_carrier, K::ok}},
      {"escape_ok", "+++", "\r\nOK\r\n", {K::ok}},
      {"silent_modem", "AT", "", {}},
      {"partial_line_waits", "AT", "\r\nO", {}},
  };
  return t;
}

class TranscriptTest : public ::testing::TestWithParam<Transcript> {};

TEST_P(TranscriptTest, ClassifiesEveryLineWhateverTheChunking) {
  const Transcript& t = GetParam();
  for (std::size_t chunk :
       {std::size_t{1}, std::size_t{3}, t.bytes.size() + 1}) {
    std::vector<AtResult> got = parse_all(t.bytes, t.command, chunk);
    ASSERT_EQ(got.size(), t.want.size()) << "chunk " << chunk;
    for (std::size_t i = 0; i < got.size(); ++i)
      EXPECT_EQ(to_string(got[i].kind), to_string(t.want[i]))
          << "line " << i << " '" << got[i].text << "' chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(Modems, TranscriptTest,
                         ::testing::ValuesIn(transcripts()),
                         [](const ::testing::TestParamInfo<Transcript>& p) {
                           return std::string(p.param.name);
                         });

TEST(TranscriptCount, AtLeastFortyTranscripts) {
  EXPECT_GE(transcripts().size(), 40u);
}

TEST(ConnectLine, FullSuffixGivesSpeedProtocolCompression) {
  AtResult r = classify_line("CONNECT 33600/ARQ/V34/LAPM/V42BIS");
  EXPECT_EQ(r.kind, K::connect);
  EXPECT_EQ(r.speed, 33600u);
  EXPECT_EQ(r.suffix, "/ARQ/V34/LAPM/V42BIS");
  EXPECT_EQ(r.protocol, "LAPM");
  EXPECT_EQ(r.compression, "V42BIS");
  EXPECT_EQ(r.modulation, "V34");
  EXPECT_TRUE(r.error_control);
}

TEST(ConnectLine, RelMeansErrorControl) {
  AtResult r = classify_line("CONNECT 9600/REL");
  EXPECT_EQ(r.speed, 9600u);
  EXPECT_EQ(r.protocol, "REL");
  EXPECT_TRUE(r.error_control);
}

TEST(ConnectLine, PlainConnectHasNoSpeed) {
  AtResult r = classify_line("CONNECT");
  EXPECT_EQ(r.kind, K::connect);
  EXPECT_EQ(r.speed, 0u);
  EXPECT_FALSE(r.error_control);
}

TEST(ConnectLine, ZyxelDottedNames) {
  AtResult r = classify_line("CONNECT 38400/V.32bis 14400/V.42bis");
  EXPECT_EQ(r.speed, 38400u);
  EXPECT_EQ(r.modulation, "V32BIS");
  EXPECT_EQ(r.compression, "V42BIS");
}

TEST(ConnectLine, ConnectedIsNotConnect) {
  EXPECT_EQ(classify_line("CONNECTED").kind, K::info);
}

TEST(ProgressLines, CarrierProtocolCompressionValues) {
  EXPECT_EQ(classify_line("CARRIER 28800").speed, 28800u);
  EXPECT_EQ(classify_line("PROTOCOL: LAP-M").protocol, "LAP-M");
  EXPECT_EQ(classify_line("COMPRESSION: V.42BIS").compression, "V.42BIS");
}

TEST(Numeric, HayesSpeedCodesAndProgressCodes) {
  EXPECT_EQ(classify_line("10").speed, 2400u);
  EXPECT_EQ(classify_line("5").speed, 1200u);
  EXPECT_EQ(classify_line("77").kind, K::protocol);
  EXPECT_EQ(classify_line("77").protocol, "LAP-M");
  EXPECT_EQ(classify_line("52").kind, K::carrier);
  EXPECT_TRUE(classify_line("3").numeric);
  EXPECT_EQ(classify_line("3").code, 3);
}

TEST(Finality, OnlyCallEndingResultsAreFinal) {
  for (K k :
       {K::ok, K::connect, K::no_carrier, K::error, K::no_dialtone, K::busy,
        K::no_answer, K::delayed, K::blacklisted, K::voice, K::no_other})
    EXPECT_TRUE(is_final(k)) << to_string(k);
  for (K k : {K::ring, K::ringing, K::carrier, K::protocol, K::compression,
              K::echo, K::info, K::garbage})
    EXPECT_FALSE(is_final(k)) << to_string(k);
}

TEST(DataAfterConnect, BytesAfterConnectAreKeptForTheStream) {
  ResultParser p;
  p.feed("\r\nCONNECT 33600\r\n220 ready\r\n");
  auto r = p.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, K::connect);
  EXPECT_EQ(p.take_rest(), "220 ready\r\n");
  EXPECT_FALSE(p.owes_line_feed());
}

TEST(DataAfterConnect, LineFeedOfConnectArrivingLaterIsOwed) {
  ResultParser p;
  p.feed("\r\nCONNECT 33600\r");
  auto r = p.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(p.take_rest(), "");
  EXPECT_TRUE(p.owes_line_feed());
}

TEST(Limits, EndlessLineIsCutAsGarbage) {
  ResultParser p;
  p.feed(std::string(2000, 'x'));
  auto r = p.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, K::garbage);
  EXPECT_LE(p.buffered(), 2000u - ResultParser::kMaxLine);
}

TEST(Terminators, ChangedS3AndS4) {
  ResultParser p;
  p.set_terminators('@', '\x1f');
  p.feed("@\x1fOK@\x1f");
  auto r = p.next();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->kind, K::ok);
}

}  // namespace
}  // namespace ferry::modem
