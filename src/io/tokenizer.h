// Tokenizers: text <-> int32 ids, with the special ids (bos, eos, pad, mask) that training and
// decoding need, saved to one self-describing file so a checkpoint folder restores the right kind.
//
// File format (all header lines ASCII, '\n'-terminated):
//   speedwins-tokenizer 1
//   type <tag>                 "byte" or "sentencepiece"
//   payload_bytes <N>
//   <N bytes of type-specific payload, then end of file>
// encode() never adds specials (callers add bos/eos where their format wants them); decode() drops
// specials and throws on ids outside [0, vocab_size()).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sw::io {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual std::string type() const = 0;  // the file's type tag
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;
  virtual int32_t vocab_size() const = 0;  // every id is in [0, vocab_size())
  virtual int32_t bos_id() const = 0;
  virtual int32_t eos_id() const = 0;
  virtual int32_t pad_id() const = 0;
  virtual int32_t mask_id() const = 0;  // the [MASK] of masked-diffusion LMs
  bool is_special(int32_t id) const {
    return id == bos_id() || id == eos_id() || id == pad_id() || id == mask_id();
  }

  // Writes the file above atomically (temp + fsync + rename); throws sw::Error naming the path.
  void save(const std::string& path) const;

 protected:
  virtual std::string payload() const = 0;  // what load_tokenizer hands back to this type
};

// Reads a file written by Tokenizer::save and builds the tokenizer its type tag names. A missing,
// truncated or corrupt file throws sw::Error naming the file, the field and what was expected.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

// Bytes are their own ids (0..255); specials follow: bos 256, eos 257, pad 258, mask 259. Any byte
// string round-trips exactly, valid UTF-8 or not.
class ByteTokenizer : public Tokenizer {
 public:
  static constexpr int32_t kBos = 256, kEos = 257, kPad = 258, kMask = 259, kVocab = 260;

  std::string type() const override { return "byte"; }
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return kVocab; }
  int32_t bos_id() const override { return kBos; }
  int32_t eos_id() const override { return kEos; }
  int32_t pad_id() const override { return kPad; }
  int32_t mask_id() const override { return kMask; }

 protected:
  std::string payload() const override { return {}; }
};

}  // namespace sw::io
