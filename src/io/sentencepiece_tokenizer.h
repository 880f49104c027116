// SentencePiece (BPE or unigram) tokenizers over libsentencepiece, and their training.
//
// Models trained here reserve unk 0, bos 1, eos 2, pad 3 and a user-defined "<mask>" piece, keep
// text as is (identity normalisation, no dummy prefix, whitespace kept) and fall back to bytes for
// characters outside the vocabulary, so decode(encode(s)) == s for any valid UTF-8 s. A model from
// elsewhere that lacks pad or mask gets them as extra ids after its pieces.
#pragma once

#include <memory>
#include <string>

#include "io/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace sw::io {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // `origin` names the file the bytes came from, for error messages.
  static std::unique_ptr<SentencePieceTokenizer> from_serialized(std::string model_proto, const std::string& origin);
  static std::unique_ptr<SentencePieceTokenizer> from_model_file(const std::string& path);  // a raw .model
  ~SentencePieceTokenizer() override;

  std::string type() const override { return "sentencepiece"; }
  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode(const std::vector<int32_t>& ids) const override;
  int32_t vocab_size() const override { return vocab_; }
  int32_t bos_id() const override { return bos_; }
  int32_t eos_id() const override { return eos_; }
  int32_t pad_id() const override { return pad_; }
  int32_t mask_id() const override { return mask_; }
  int32_t piece_count() const { return pieces_; }  // ids below this are SentencePiece's own

 protected:
  std::string payload() const override { return proto_; }

 private:
  SentencePieceTokenizer() = default;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string proto_;
  int32_t pieces_ = 0, vocab_ = 0, bos_ = -1, eos_ = -1, pad_ = -1, mask_ = -1;
};

// Trains on the text of `corpus_path` (a file or folder, see corpus.h; one sentence per line),
// writes "<model_prefix>.model" atomically (the plain SentencePiece model, usable by other tools)
// and returns the tokenizer. `type` is "bpe" or "unigram". The vocabulary may come out smaller than
// asked when the corpus is small (hard_vocab_limit off); it must hold the 256 byte pieces and the
// corpus's characters, so vocab_size below about 300 is rejected by SentencePiece.
std::unique_ptr<SentencePieceTokenizer> train_sentencepiece(const std::string& corpus_path,
                                                            const std::string& model_prefix, int32_t vocab_size,
                                                            const std::string& type = "bpe");

}  // namespace sw::io
