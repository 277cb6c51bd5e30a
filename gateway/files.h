// Reading a whole small file (configuration, users, aliases, traces) into
// memory, with an error a postmaster can act on.
#pragma once

#include <string>

namespace ferry::gw {

// Reads the regular file at `path` into `out`.  On failure returns false
// and sets `error` to "PATH: REASON" with the system's reason ("No such
// file or directory", "Permission denied", "is a directory, not a file").
bool read_text_file(const std::string& path, std::string& out,
                    std::string& error);

}  // namespace ferry::gw
