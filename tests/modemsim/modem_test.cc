// The Hayes command layer of ferry-modemsim driven with plain strings and a
// recording host: no PTY, no clock but the one the test advances.
#include "tools/modemsim/modem.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace ferry::modemsim {
namespace {

class RecordingHost : public Modem::Host {
 public:
  void ToDte(Modem&, std::string_view b) override { dte += b; }
  void Dial(Modem&, const DialRequest& r) override { dials.push_back(r); }
  void Answer(Modem&) override { ++answers; }
  void Hangup(Modem&) override { ++hangups; }
  void ToLine(Modem&, std::string_view b) override { line += b; }
  void LinesChanged(Modem&) override {}
  void Note(Modem&, std::string_view) override {}

  std::string dte, line;
  std::vector<DialRequest> dials;
  int answers = 0, hangups = 0;
};

class ModemTest : public ::testing::Test {
 protected:
  // The DTE has the port open: DTR on.
  ModemTest() : m_("T", &host_, 40) { m_.OnDtr(true, now_); }

  // Sends bytes and returns what the modem said back.
  std::string Send(const std::string& bytes) {
    host_.dte.clear();
    m_.Input(bytes, now_);
    return host_.dte;
  }
  void Advance(double seconds) {
    now_ += std::chrono::duration_cast<Duration>(
        std::chrono::duration<double>(seconds));
    m_.Tick(now_);
  }

  RecordingHost host_;
  Modem m_;
  TimePoint now_ = TimePoint{} + std::chrono::hours(1);
};

TEST_F(ModemTest, EchoAndVerboseOk) {
  EXPECT_EQ(Send("AT\r"), "AT\r\r\nOK\r\n");
  EXPECT_EQ(Send("ATE0\r"), "ATE0\r\r\nOK\r\n");
  EXPECT_EQ(Send("at\r"), "\r\nOK\r\n");
}

TEST_F(ModemTest, NumericResultsHaveNoLineFeed) {
  Send("ATE0V0\r");
  EXPECT_EQ(Send("AT\r"), "0\r");
  EXPECT_EQ(Send("ATS0?\r"), "000\r\n0\r");
}

TEST_F(ModemTest, ErrorStopsTheLineButKeepsEarlierCommands) {
  EXPECT_EQ(Send("ATE0 V1 X9 Q1\r"), "ATE0 V1 X9 Q1\r\r\nERROR\r\n");
  EXPECT_EQ(Send("AT\r"), "\r\nOK\r\n");
}

TEST_F(ModemTest, UnknownRegisterIsError) {
  Send("ATE0\r");
  EXPECT_EQ(Send("ATS300?\r"), "\r\nERROR\r\n");
  EXPECT_EQ(Send("ATS3=200\r"), "\r\nERROR\r\n");
}

TEST_F(ModemTest, LegacySelectedRegister) {
  Send("ATE0\r");
  EXPECT_EQ(Send("ATS7 =30\r"), "\r\nOK\r\n");
  EXPECT_EQ(Send("AT?\r"), "\r\n030\r\n\r\nOK\r\n");
}

TEST_F(ModemTest, DialStringKeepsDigitsAndModifiers) {
  Send("ATE0\r");
  EXPECT_EQ(Send("ATDT(02) 555-12,W34@\r"), "");
  ASSERT_EQ(host_.dials.size(), 1u);
  EXPECT_EQ(host_.dials[0].number, "025551234");
  EXPECT_TRUE(host_.dials[0].wait_tone);
  EXPECT_TRUE(host_.dials[0].quiet_answer);
  EXPECT_EQ(host_.dials[0].pauses, 1);
  EXPECT_EQ(m_.state(), State::kDialing);
}

TEST_F(ModemTest, LfAfterDialCrIsNotAnAbortButCrIs) {
  Send("ATE0\r");
  Send("ATD5\r\n");
  EXPECT_EQ(m_.state(), State::kDialing);
  EXPECT_EQ(Send("\r"), "\r\nNO CARRIER\r\n");
  EXPECT_EQ(host_.hangups, 1);
}

TEST_F(ModemTest, SemicolonStaysInCommandStateAndContinues) {
  Send("ATE0\r");
  EXPECT_EQ(Send("ATD55;\r"), "\r\nOK\r\n");
  EXPECT_TRUE(host_.dials.empty());
  Send("ATD5\r");
  ASSERT_EQ(host_.dials.size(), 1u);
  EXPECT_EQ(host_.dials[0].number, "555");
}

TEST_F(ModemTest, ConnectLinesFollowW1AndS95) {
  Send("ATE0W1S95=34\r");
  Send("ATD5\r");
  host_.dte.clear();
  m_.OnConnect(CallInfo{9600, true}, now_);
  EXPECT_EQ(host_.dte,
            "\r\nCARRIER 9600\r\n\r\nPROTOCOL: LAP-M\r\n"
            "\r\nCOMPRESSION: NONE\r\n\r\nCONNECT 9600/ARQ\r\n");
}

TEST_F(ModemTest, X0GivesPlainConnectAndNumericCodesFollowHayes) {
  Send("ATE0X0\r");
  Send("ATD5\r");
  host_.dte.clear();
  m_.OnConnect(CallInfo{33600, true}, now_);
  EXPECT_EQ(host_.dte, "\r\nCONNECT\r\n");
}

TEST_F(ModemTest, EscapeNeedsGuardTimesOnBothSides) {
  Send("ATE0\r");
  Send("ATD5\r");
  m_.OnConnect(CallInfo{}, now_);
  Advance(1.1);
  EXPECT_EQ(Send("+++"), "");
  EXPECT_EQ(host_.line, "+++");  // the escape is data too
  Advance(0.5);
  EXPECT_EQ(m_.state(), State::kOnline);
  host_.dte.clear();
  Advance(0.6);
  EXPECT_EQ(host_.dte, "\r\nOK\r\n");
  EXPECT_EQ(m_.state(), State::kOnlineCommand);
  EXPECT_EQ(Send("ATO\r"), "\r\nCONNECT 33600\r\n");
}

TEST_F(ModemTest, PlusesInsideDataDoNotEscape) {
  Send("ATE0\r");
  Send("ATD5\r");
  m_.OnConnect(CallInfo{}, now_);
  Advance(0.2);
  Send("a+++");
  Advance(2.0);
  EXPECT_EQ(m_.state(), State::kOnline);
}

TEST_F(ModemTest, RingCountsAndAutoAnswers) {
  Send("ATE0S0=2\r");
  m_.OnDtr(false, now_);  // &D2: no auto-answer while DTR is off
  host_.dte.clear();
  m_.OnRing(now_);
  EXPECT_EQ(host_.dte, "\r\nRING\r\n");
  EXPECT_EQ(host_.answers, 0);
  m_.OnDtr(true, now_);
  m_.OnRing(now_);
  EXPECT_EQ(host_.answers, 1);
  EXPECT_EQ(m_.reg(1), 2);
}

TEST_F(ModemTest, CarrierLossReportsAfterS10) {
  Send("ATE0\r");
  Send("ATD5\r");
  m_.OnConnect(CallInfo{}, now_);
  host_.dte.clear();
  m_.OnCarrierLost(now_);
  Advance(1.0);
  EXPECT_EQ(host_.dte, "");
  Advance(0.5);
  EXPECT_EQ(host_.dte, "\r\nNO CARRIER\r\n");
  EXPECT_EQ(m_.state(), State::kCommand);
}

TEST_F(ModemTest, DtrDropUnderD1KeepsCallD2HangsUp) {
  Send("ATE0&D1\r");
  Send("ATD5\r");
  m_.OnConnect(CallInfo{}, now_);
  m_.OnDtr(false, now_);
  host_.dte.clear();
  Advance(0.1);
  EXPECT_EQ(host_.dte, "\r\nOK\r\n");
  EXPECT_EQ(m_.state(), State::kOnlineCommand);
  m_.OnDtr(true, now_);
  Send("AT&D2O\r");
  m_.OnDtr(false, now_);
  Advance(0.1);
  EXPECT_EQ(m_.state(), State::kCommand);
  EXPECT_EQ(host_.hangups, 1);
}

TEST_F(ModemTest, TimeScaleShrinksS7) {
  m_.set_time_scale(10);
  Send("ATE0S7=5\r");
  Send("ATA\r");
  host_.dte.clear();
  Advance(0.4);
  EXPECT_EQ(host_.dte, "");
  Advance(0.2);
  EXPECT_EQ(host_.dte, "\r\nNO CARRIER\r\n");
}

}  // namespace
}  // namespace ferry::modemsim
