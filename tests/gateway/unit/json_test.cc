// gateway/json.h: the control protocol's JSON, bytes in, values out.
#include "gateway/json.h"

#include <gtest/gtest.h>

namespace ferry::json {
namespace {

Value parsed(std::string_view text) {
  Value v;
  std::string error;
  EXPECT_TRUE(parse(text, v, error)) << text << ": " << error;
  return v;
}

std::string parse_error(std::string_view text) {
  Value v;
  std::string error;
  EXPECT_FALSE(parse(text, v, error)) << text;
  return error;
}

TEST(Json, ParsesEveryKind) {
  Value v =
      parsed(R"( {"a":1,"b":-2.5e3,"c":"x\"y\\z\n","d":[true,false,null],)"
             R"("e":{},"f":[]} )");
  EXPECT_EQ(v["a"].as_int(), 1);
  EXPECT_TRUE(v["a"].is_integer());
  EXPECT_DOUBLE_EQ(v["b"].as_double(), -2500);
  EXPECT_EQ(v["c"].as_string(), "x\"y\\z\n");
  ASSERT_EQ(v["d"].as_array().size(), 3u);
  EXPECT_TRUE(v["d"].as_array()[0].as_bool());
  EXPECT_TRUE(v["d"].as_array()[2].is_null());
  EXPECT_TRUE(v["e"].is_object());
  EXPECT_TRUE(v["missing"].is_null());
}

TEST(Json, KeepsLargeIntegersExact) {
  Value v = parsed("[9007199254740993, -9223372036854775808]");
  EXPECT_EQ(v.as_array()[0].as_int(), 9007199254740993LL);
  EXPECT_EQ(v.as_array()[1].as_int(), INT64_MIN);
  EXPECT_EQ(write(v), "[9007199254740993,-9223372036854775808]");
}

TEST(Json, UnicodeEscapesBecomeUtf8) {
  EXPECT_EQ(parsed(R"("caf\u00e9 \ud83d\ude00")").as_string(),
            "caf\xc3\xa9 \xf0\x9f\x98\x80");
  EXPECT_NE(parse_error(R"("\ud83d")"), "");
}

TEST(Json, WriterNeverEmitsARawNewline) {
  Value v;
  v["text"] = std::string("line\r\nnext\x01\x7f", 12);
  std::string out = write(v);
  EXPECT_EQ(out.find('\n'), std::string::npos);
  EXPECT_EQ(out, R"({"text":"line\r\nnext\u0001\u007f"})");
  EXPECT_EQ(parsed(out), v);
}

TEST(Json, RoundTripsAndSortsKeys) {
  Value v;
  v["z"] = 1;
  v["a"]["b"] = Array{Value("x"), Value(2.5), Value(nullptr)};
  EXPECT_EQ(write(v), R"({"a":{"b":["x",2.5,null]},"z":1})");
  EXPECT_EQ(parsed(write(v)), v);
}

TEST(Json, RefusesBadInputWithOffset) {
  EXPECT_EQ(parse_error("{\"a\" 1}"), "offset 5: expected ':'");
  EXPECT_NE(parse_error("[1,]"), "");
  EXPECT_NE(parse_error("01"), "");
  EXPECT_NE(parse_error("\"tab\there\""), "");
  EXPECT_NE(parse_error("{} x"), "");
  EXPECT_NE(parse_error(""), "");
  EXPECT_NE(parse_error("nul"), "");
  EXPECT_NE(parse_error(std::string(100, '[')), "");  // too deep
}

TEST(Json, AccessorsFallBack) {
  Value v = parsed(R"({"n":"7"})");
  EXPECT_EQ(v["n"].as_int(42), 42);
  EXPECT_EQ(v["n"]["deeper"].as_string(), "");
  EXPECT_TRUE(v["n"].as_array().empty());
  EXPECT_FALSE(v.has("m"));
}

}  // namespace
}  // namespace ferry::json
