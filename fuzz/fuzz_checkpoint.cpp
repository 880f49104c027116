// libFuzzer target: the checkpoint loader. The first byte picks what the rest is: 0, a whole
// checkpoint file; 1, the "config" metadata of an otherwise valid file; 2, its "train_state"; 3, its
// "integrity". Metadata modes reach the config and train-state checks without the fuzzer having to
// rebuild a safetensors header.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "io/safetensors.h"
#include "train/checkpoint.h"

namespace {
const char* kConfig = R"({"name":"f","vocab_size":16,"d_model":8,"n_layers":1,"mixer":{"type":"attention","n_heads":2}})";
const char* kTrainState =
    R"({"step":1,"tokens":8,"sampler_state":"x","train_config":{},"tokenizer":"tokenizer.swtok","optimizer_steps":1})";
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string bytes;
  if (data[0] % 4 == 0) {
    bytes = rest;
  } else {
    sw::io::Metadata m = {{"format", "speedwins-checkpoint-v1"}, {"config", kConfig}, {"train_state", kTrainState}};
    m[data[0] % 4 == 1 ? "config" : data[0] % 4 == 2 ? "train_state" : "integrity"] = rest;
    std::ostringstream os;
    sw::io::NamedTensors none;
    try {
      sw::io::write_safetensors(os, none, m);
    } catch (const sw::Error&) {  // not valid UTF-8: the writer refuses it
      return 0;
    }
    bytes = os.str();
  }
  try {
    sw::train::Checkpoint c = sw::train::checkpoint_from(sw::io::parse_safetensors(bytes, "fuzz.safetensors"));
    (void)c.state.step;
  } catch (const sw::Error&) {
  }
  return 0;
}
