// libFuzzer target: arbitrary modem output through the result parser, fed
// in chunks whose sizes come from the input itself.  Checks invariants that
// the driver relies on: no crash, bounded buffering, take_rest() returns
// only bytes that were fed.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "modem/at_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data,
                                      std::size_t size) {
  using ferry::modem::ResultParser;
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 17;
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);

  ResultParser p;
  p.expect_echo("ATDT5551234");
  std::size_t fed = 0;
  while (fed < in.size()) {
    std::string_view piece = in.substr(fed, chunk);
    p.feed(piece);
    fed += piece.size();
    while (auto r = p.next()) {
      (void)ferry::modem::is_final(r->kind);
      if (r->text.size() > ResultParser::kMaxLine) __builtin_trap();
    }
    if (p.buffered() > ResultParser::kMaxLine + chunk) __builtin_trap();
  }
  if (p.take_rest().size() > in.size()) __builtin_trap();
  (void)ferry::modem::classify_line(in, "AT");
  return 0;
}
