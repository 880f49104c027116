// `speedwins tokenizer train`: trains a BPE or unigram tokenizer with SentencePiece and saves it in
// speedwins' tokenizer format (usable with `train --tokenizer`); `speedwins tokenizer encode` shows
// how a text splits.
#include <cstdio>

#include "io/sentencepiece_tokenizer.h"
#include "tools/cli_common.h"
#include "tools/commands.h"
#include "train/text_source.h"

namespace sw::tools {

void add_tokenizer_command(CLI::App& app) {
  CLI::App* tok = app.add_subcommand("tokenizer", "Train or try tokenizers");
  tok->require_subcommand(1);
  static std::string input = "brown", prefix, type = "bpe", out;
  static int32_t vocab = 4096;
  CLI::App* tr = tok->add_subcommand("train", "Train a SentencePiece BPE/unigram tokenizer");
  tr->add_option("--input", input, "Corpus: a text file or folder (brown = data/brown.txt)")->capture_default_str();
  tr->add_option("--out", out, "Output tokenizer file (speedwins format, e.g. runs/tok.swtok)")->required();
  tr->add_option("--vocab-size", vocab, "Vocabulary size")->capture_default_str();
  tr->add_option("--type", type, "bpe | unigram")->capture_default_str();
  set_runner(tr, [] {
    std::string corpus = input == "brown" ? train::brown_corpus_path() : input;
    SW_CHECK(!corpus.empty(), "tokenizer", "the Brown corpus is missing: run scripts/fetch_brown.sh or pass --input");
    auto t = io::train_sentencepiece(corpus, out + ".sp", vocab, type);
    t->save(out);
    std::printf("trained %s tokenizer with %d ids on %s: %s (SentencePiece model: %s.sp.model)\n", type.c_str(),
                t->vocab_size(), corpus.c_str(), out.c_str(), out.c_str());
    return 0;
  });
  static std::string spec = "byte", text;
  CLI::App* en = tok->add_subcommand("encode", "Show the tokens of a text");
  en->add_option("--tokenizer", spec, "byte | a tokenizer file")->capture_default_str();
  en->add_option("text", text, "Text to encode")->required();
  set_runner(en, [] {
    auto t = make_tokenizer(spec);
    std::vector<int32_t> ids = t->encode(text);
    for (int32_t id : ids) std::printf("%d ", id);
    std::printf("\n%zu tokens for %zu bytes; decodes to: %s\n", ids.size(), text.size(), t->decode(ids).c_str());
    return 0;
  });
}

}  // namespace sw::tools
