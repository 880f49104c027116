// Plain-text corpora: one file, or a folder of files read in a fixed order, as one string.
//
// A folder contributes its top-level regular files whose names do not start with '.', sorted by
// name (byte order), joined with "\n". Binary-looking files in a folder are skipped with a warning
// on stderr (a stray .pickle or .tgz beside the text should not abort a run); a binary file named
// directly is an error, since the user asked for exactly that file.
#pragma once

#include <string>

namespace sw::io {

// The text of `path` (a file or a folder, as above). Throws sw::Error naming the path when it is
// missing, unreadable, empty, binary (a file named directly), or a folder with no usable text.
std::string load_text_corpus(const std::string& path);

// True when `bytes` looks like binary data rather than text: a NUL byte, or more than 10% control
// characters (other than tab, newline, carriage return, form feed) in its first 64 KiB.
bool looks_binary(const std::string& bytes);

}  // namespace sw::io
