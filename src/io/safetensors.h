// The Hugging Face safetensors format: an 8-byte little-endian header length N, N bytes of JSON
// header {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data buffer (offsets relative to its start). Used for weights and checkpoints.
//
// Files are untrusted: the reader checks the whole header against the file size before it
// allocates or reads tensor data, and every rejection is an sw::Error naming the file, the tensor
// or field, and what was expected. The writer goes through write_file_atomic.
#pragma once

#include <cstdint>
#include <map>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace sw::io {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
using Metadata = std::map<std::string, std::string>;

// Headers above this are refused as corrupt before anything is allocated (the reference
// implementation uses the same bound).
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

struct SafetensorsFile {
  std::string path;       // or the label given to parse_safetensors
  NamedTensors tensors;   // contiguous, in file order (ascending data offset)
  Metadata metadata;      // the "__metadata__" object, empty when absent
  uint64_t header_bytes = 0;  // N, including padding

  bool contains(const std::string& name) const;
  const Tensor& at(const std::string& name) const;  // throws sw::Error naming the file and tensor
};

// "F32", "BF16", "F64", "I32": the dtype strings of the format.
const char* safetensors_dtype(DType t);

// Writes tensors in the given order, packed, after a header padded with spaces so the data starts
// at an 8-byte-aligned file offset. Header keys keep the given order, "__metadata__" first (when
// non-empty), so the bytes are a pure function of the arguments. Names must be unique and not
// "__metadata__"; tensors may be strided views.
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});
void write_safetensors(std::ostream& os, const NamedTensors& tensors, const Metadata& metadata = {});

SafetensorsFile load_safetensors(const std::string& path);
// The same checks over bytes in memory; `label` stands for the file name in error messages.
SafetensorsFile parse_safetensors(std::string_view bytes, const std::string& label);

}  // namespace sw::io
