// SentencePiece tokenizer: loading, special ids, encode/decode and training through libsentencepiece.
#include "io/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <unordered_map>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/corpus.h"

namespace sw::io {
namespace {

constexpr const char* kMaskPiece = "<mask>";

// Feeds the corpus to the trainer line by line without copying it into a temporary file.
class LineIterator : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::string& text) : text_(text) { Next(); }
  bool done() const override { return done_; }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }
  void Next() override {
    // Blank lines carry nothing to learn from; skipping them also keeps the trainer's count honest.
    while (pos_ < text_.size()) {
      size_t nl = text_.find('\n', pos_);
      if (nl == std::string::npos) nl = text_.size();
      line_.assign(text_, pos_, nl - pos_);
      if (!line_.empty() && line_.back() == '\r') line_.pop_back();
      pos_ = nl + 1;
      if (!line_.empty()) return;
    }
    done_ = true;
  }

 private:
  const std::string& text_;
  std::string line_;
  size_t pos_ = 0;
  bool done_ = false;
};

}  // namespace

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_serialized(std::string model_proto,
                                                                                const std::string& origin) {
  std::unique_ptr<SentencePieceTokenizer> t(new SentencePieceTokenizer());
  t->sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto st = t->sp_->LoadFromSerializedProto(model_proto);
  SW_CHECK(st.ok() && t->sp_->GetPieceSize() > 0, "tokenizer", "tokenizer file ", origin,
           ": field 'payload': expected a serialized SentencePiece model, got ", model_proto.size(),
           " bytes that do not load (", st.ok() ? "no pieces" : st.ToString(), ")");
  t->proto_ = std::move(model_proto);
  t->pieces_ = t->sp_->GetPieceSize();
  t->vocab_ = t->pieces_;
  // Specials the model lacks get ids after its pieces, so every tokenizer offers all four.
  auto own_or_extra = [&](int id) { return id >= 0 ? id : t->vocab_++; };
  t->bos_ = own_or_extra(t->sp_->bos_id());
  t->eos_ = own_or_extra(t->sp_->eos_id());
  t->pad_ = own_or_extra(t->sp_->pad_id());
  int mask = t->sp_->PieceToId(kMaskPiece);
  t->mask_ = own_or_extra(t->sp_->IdToPiece(mask) == kMaskPiece ? mask : -1);
  return t;
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_model_file(const std::string& path) {
  return from_serialized(read_file(path), path);
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  // SentencePiece slows down badly on one multi-megabyte input (a 6 MB corpus took a minute), so
  // long text goes in chunks cut after a '\n'. For models trained here that changes nothing: they
  // learn from lines, so no piece contains '\n' and none can span a cut (a foreign model with such
  // pieces could tokenize a cut differently).
  constexpr size_t kChunk = 512;
  std::vector<int32_t> out;
  std::vector<int> ids;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.size();
    if (end - pos > kChunk) {
      size_t nl = text.find('\n', pos + kChunk);
      if (nl != std::string_view::npos) end = nl + 1;
    }
    auto st = sp_->Encode(text.substr(pos, end - pos), &ids);
    SW_CHECK(st.ok(), "tokenizer", "sentencepiece encode of ", end - pos, " bytes at offset ", pos,
             " failed: ", st.ToString());
    out.insert(out.end(), ids.begin(), ids.end());
    pos = end;
  }
  return out;
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<int> keep;
  keep.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    int32_t id = ids[i];
    SW_CHECK(id >= 0 && id < vocab_, "tokenizer", "sentencepiece tokenizer: id ", id, " at position ", i,
             " is out of range, expected [0, ", vocab_, ")");
    if (!is_special(id) && id < pieces_) keep.push_back(id);
  }
  std::string out;
  auto st = sp_->Decode(keep, &out);
  SW_CHECK(st.ok(), "tokenizer", "sentencepiece decode of ", ids.size(), " ids failed: ", st.ToString());
  return out;
}

std::unique_ptr<SentencePieceTokenizer> train_sentencepiece(const std::string& corpus_path,
                                                            const std::string& model_prefix, int32_t vocab_size,
                                                            const std::string& type) {
  SW_CHECK(type == "bpe" || type == "unigram", "tokenizer", "train_sentencepiece: type '", type,
           "', expected bpe or unigram");
  SW_CHECK(vocab_size > 0 && vocab_size <= (1 << 20), "tokenizer", "train_sentencepiece: vocab_size ", vocab_size,
           ", expected 1..", 1 << 20);
  SW_CHECK(!model_prefix.empty(), "tokenizer", "train_sentencepiece: empty model_prefix");
  std::string text = load_text_corpus(corpus_path);

  std::unordered_map<std::string, std::string> args = {
      {"model_type", type},
      {"vocab_size", std::to_string(vocab_size)},
      {"unk_id", "0"}, {"bos_id", "1"}, {"eos_id", "2"}, {"pad_id", "3"},
      {"user_defined_symbols", kMaskPiece},
      {"byte_fallback", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "false"},
      {"hard_vocab_limit", "false"},
      {"num_threads", "2"},
      {"minloglevel", "2"},  // the trainer's progress log would bury ours
  };
  LineIterator lines(text);
  std::string proto;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &lines, &proto);
  SW_CHECK(st.ok(), "tokenizer", "training a ", type, " SentencePiece model of vocab_size ", vocab_size, " on ",
           corpus_path, " failed: ", st.ToString());
  std::string model_path = model_prefix + ".model";
  auto tok = SentencePieceTokenizer::from_serialized(proto, model_path);
  write_file_atomic(model_path, proto);
  return tok;
}

}  // namespace sw::io
