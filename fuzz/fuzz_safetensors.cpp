// libFuzzer target: the safetensors reader over arbitrary bytes. Any input must give a file or an
// sw::Error; ASan/UBSan and libFuzzer report anything else (a crash, a leak, a bad_alloc).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    sw::io::SafetensorsFile f = sw::io::parse_safetensors(
        std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
    for (const auto& [name, t] : f.tensors) (void)t.nbytes();
  } catch (const sw::Error&) {
  }
  return 0;
}
