// libFuzzer target: the tokenizer file loader (header fields, byte and SentencePiece payloads), then
// an encode/decode round trip of a short text through whatever loaded.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <string>

#include "io/tokenizer.h"
#include "core/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // load_tokenizer reads a path: one scratch file per fuzzing process.
  static const std::string path = "/tmp/sw_fuzz_tokenizer." + std::to_string(::getpid());
  {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  try {
    auto t = sw::io::load_tokenizer(path);
    std::vector<int32_t> ids = t->encode("fuzz me, tokenizer");
    (void)t->decode(ids);
  } catch (const sw::Error&) {
  }
  return 0;
}
