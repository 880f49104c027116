// Corpus loading, the byte and SentencePiece tokenizers, and the tokenizer file format, including
// the bad inputs the design promises clear errors for (missing corpus, empty folder, corrupt files).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "core/error.h"
#include "io/corpus.h"
#include "io/sentencepiece_tokenizer.h"
#include "io/tokenizer.h"
#include "testing.h"

namespace sw::io {
namespace {
namespace fs = std::filesystem;

// A fresh folder under the system temp dir, removed with everything in it at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "sw_io_test.XXXXXX").string();
    SW_ASSERT(::mkdtemp(tmpl.data()) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name, const std::string& bytes) const {
    fs::path p = path / name;
    std::ofstream(p, std::ios::binary) << bytes;
    return p.string();
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// Runs f, which must throw sw::Error, and returns the message (empty, with a failure, if it did not).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected sw::Error";
  return {};
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "'" << (haystack) << "' lacks '" << (needle) << "'"

// ---- corpus ----

TEST(Corpus, FileAndSortedFolder) {
  TempDir d;
  EXPECT_EQ(load_text_corpus(d.file("one.txt", "hello\n")), "hello\n");
  fs::create_directory(d.path / "docs");
  d.file("docs/b.txt", "second");
  d.file("docs/a.txt", "first");
  d.file("docs/c.txt", "");              // empty files add nothing (not even a separator)
  d.file("docs/.hidden", "never read");  // dotfiles are skipped
  fs::create_directory(d.path / "docs/sub");  // folders are not descended into
  d.file("docs/sub/z.txt", "nested");
  EXPECT_EQ(load_text_corpus(d / "docs"), "first\nsecond");
}

TEST(Corpus, BinaryFilesSkippedInFolderRejectedByName) {
  TempDir d;
  fs::create_directory(d.path / "docs");
  std::string bin = d.file("docs/a.pickle", std::string("\x80\x04\x95\0\0", 5));
  d.file("docs/b.txt", "text");
  EXPECT_EQ(load_text_corpus(d / "docs"), "text");
  std::string m = error_of([&] { load_text_corpus(bin); });
  EXPECT_CONTAINS(m, bin);
  EXPECT_CONTAINS(m, "binary");
  EXPECT_TRUE(looks_binary(std::string(100, '\x01')));
  EXPECT_FALSE(looks_binary("tabs\tand\r\nnewlines\f and UTF-8 caf\xc3\xa9"));
}

TEST(Corpus, MissingEmptyAndUnusableGiveErrorsNamingThePath) {
  TempDir d;
  std::string missing = d / "nope.txt";
  std::string m = error_of([&] { load_text_corpus(missing); });
  EXPECT_CONTAINS(m, "[corpus]");
  EXPECT_CONTAINS(m, missing);
  EXPECT_CONTAINS(m, "does not exist");

  std::string empty = d.file("empty.txt", "");
  EXPECT_CONTAINS(error_of([&] { load_text_corpus(empty); }), empty);

  fs::create_directory(d.path / "none");
  m = error_of([&] { load_text_corpus(d / "none"); });
  EXPECT_CONTAINS(m, d / "none");
  EXPECT_CONTAINS(m, "no usable text");

  fs::create_directory(d.path / "allbinary");
  d.file("allbinary/x", std::string(10, '\0'));
  EXPECT_CONTAINS(error_of([&] { load_text_corpus(d / "allbinary"); }), d / "allbinary");
  EXPECT_THROW(load_text_corpus(""), Error);
}

// ---- byte tokenizer ----

TEST(ByteTokenizer, RoundTripsAnyBytes) {
  ByteTokenizer t;
  std::string s = "h\xc3\xa9llo \xff\xfe invalid UTF-8";
  s += std::string(1, '\0') + "\n";
  std::vector<int32_t> ids = t.encode(s);
  ASSERT_EQ(ids.size(), s.size());  // one id per byte
  EXPECT_EQ(ids[0], 'h');
  EXPECT_EQ(ids[1], 0xc3);  // bytes are unsigned ids
  EXPECT_EQ(t.decode(ids), s);
  EXPECT_EQ(t.vocab_size(), 260);
  std::vector<int32_t> specials = {t.bos_id(), t.eos_id(), t.pad_id(), t.mask_id()};
  for (int32_t id : specials) {
    EXPECT_GE(id, 256);
    EXPECT_LT(id, t.vocab_size());
    EXPECT_TRUE(t.is_special(id));
  }
  EXPECT_EQ(std::set<int32_t>(specials.begin(), specials.end()).size(), 4u);
  // Specials are dropped by decode; ids outside the vocabulary are an error naming the id.
  EXPECT_EQ(t.decode({t.bos_id(), 'a', t.mask_id(), 'b', t.eos_id(), t.pad_id()}), "ab");
  EXPECT_CONTAINS(error_of([&] { t.decode({'a', 260}); }), "260");
  EXPECT_THROW(t.decode({-1}), Error);
  EXPECT_TRUE(t.encode("").empty());
}

TEST(TokenizerFile, ByteSaveLoadRoundTrip) {
  TempDir d;
  std::string path = d / "tokenizer.swtok";
  ByteTokenizer().save(path);
  auto t = load_tokenizer(path);
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type(), "byte");
  EXPECT_EQ(t->vocab_size(), 260);
  EXPECT_EQ(t->decode(t->encode("abc")), "abc");
  // Atomic write: no temporary file is left beside the result.
  EXPECT_EQ(std::distance(fs::directory_iterator(d.path), fs::directory_iterator()), 1);
}

TEST(TokenizerFile, CorruptFilesNameFileAndField) {
  TempDir d;
  std::string missing = d / "missing.swtok";
  EXPECT_CONTAINS(error_of([&] { load_tokenizer(missing); }), missing);

  struct Case {
    const char* name;
    std::string bytes;
    const char* field;
  };
  const std::vector<Case> cases = {
      {"empty", "", "speedwins-tokenizer"},
      {"garbage", "\x89PNG\r\n\x1a\n....", "speedwins-tokenizer"},
      {"version", "speedwins-tokenizer 7\ntype byte\npayload_bytes 0\n", "version 7"},
      {"notanumber", "speedwins-tokenizer x1\n", "decimal number"},
      {"notype", "speedwins-tokenizer 1\npayload_bytes 0\n", "'type'"},
      {"unknowntype", "speedwins-tokenizer 1\ntype wordpiece\npayload_bytes 0\n", "wordpiece"},
      {"nolength", "speedwins-tokenizer 1\ntype byte\n", "'payload_bytes'"},
      {"truncated", "speedwins-tokenizer 1\ntype sentencepiece\npayload_bytes 100\nabc", "'payload_bytes'"},
      {"trailing", "speedwins-tokenizer 1\ntype byte\npayload_bytes 0\nextra", "'payload_bytes'"},
      {"huge", "speedwins-tokenizer 1\ntype byte\npayload_bytes 99999999999999999999\n", "'payload_bytes'"},
      {"badsp", "speedwins-tokenizer 1\ntype sentencepiece\npayload_bytes 9\nnot a pb!", "'payload'"},
      {"emptysp", "speedwins-tokenizer 1\ntype sentencepiece\npayload_bytes 0\n", "'payload'"},
  };
  for (const Case& c : cases) {
    std::string path = d.file(c.name, c.bytes);
    std::string m = error_of([&] { load_tokenizer(path); });
    EXPECT_CONTAINS(m, "[tokenizer]");
    EXPECT_CONTAINS(m, path);
    EXPECT_CONTAINS(m, c.field);
  }
}

// ---- SentencePiece ----

// A few hundred lines of pseudo-English from a fixed word list: enough repetition for BPE merges
// and unigram pieces to form, small enough that training takes well under a second.
std::string small_corpus() {
  const std::vector<std::string> words = {"the", "jury", "said", "that", "election", "was", "conducted", "in",
                                          "a",   "city", "of",   "Atlanta", "county", "grand", "report", "and",
                                          "no",  "evidence", "irregularities", "took", "place", "Friday", ","};
  std::mt19937_64 rng(7);
  std::string text;
  for (int line = 0; line < 400; ++line) {
    int n = 5 + static_cast<int>(rng() % 10);
    for (int i = 0; i < n; ++i) text += (i ? " " : "") + words[rng() % words.size()];
    text += ".\n";
  }
  return text;
}

class SentencePiece : public ::testing::TestWithParam<const char*> {};

TEST_P(SentencePiece, TrainSaveLoadRoundTrip) {
  TempDir d;
  std::string corpus = d.file("corpus.txt", small_corpus());
  auto t = train_sentencepiece(corpus, d / "sp", 400, GetParam());
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(fs::exists(d / "sp.model"));
  EXPECT_EQ(t->type(), "sentencepiece");
  EXPECT_GT(t->vocab_size(), 256 + 4);  // byte pieces, specials and at least some merges
  EXPECT_LE(t->vocab_size(), 400);
  std::vector<int32_t> specials = {t->bos_id(), t->eos_id(), t->pad_id(), t->mask_id()};
  EXPECT_EQ(specials, (std::vector<int32_t>{1, 2, 3, 4}));  // as train_sentencepiece reserves them

  // Exact round trip, including what training never saw (newlines, tabs, runs of spaces, non-ASCII
  // through byte fallback), and compression on text like the corpus.
  std::string s = "the jury said  that\n\tthe caf\xc3\xa9 \xf0\x9f\x98\x80 was in Atlanta.\n";
  std::vector<int32_t> ids = t->encode(s);
  EXPECT_EQ(t->decode(ids), s);
  for (int32_t id : ids) EXPECT_TRUE(id >= 0 && id < t->vocab_size()) << id;
  std::string common = "the grand jury said that the election was conducted in a city";
  EXPECT_LT(t->encode(common).size(), common.size() / 2);
  // Long text is encoded in chunks; the result must equal encoding line by line.
  std::string big = small_corpus();
  std::vector<int32_t> whole = t->encode(big), by_line;
  for (size_t pos = 0; pos < big.size();) {
    size_t nl = big.find('\n', pos) + 1;
    std::vector<int32_t> part = t->encode(std::string_view(big).substr(pos, nl - pos));
    by_line.insert(by_line.end(), part.begin(), part.end());
    pos = nl;
  }
  EXPECT_EQ(whole, by_line);
  EXPECT_EQ(t->decode(whole), big);

  // Specials are dropped by decode; out-of-range ids throw.
  std::vector<int32_t> with_specials = {t->bos_id()};
  with_specials.insert(with_specials.end(), ids.begin(), ids.end());
  with_specials.push_back(t->mask_id());
  with_specials.push_back(t->eos_id());
  EXPECT_EQ(t->decode(with_specials), s);
  EXPECT_THROW(t->decode({t->vocab_size()}), Error);

  // Through the tagged file and through the raw .model: the same tokenizer.
  t->save(d / "tok.swtok");
  for (const std::unique_ptr<Tokenizer>& u :
       {load_tokenizer(d / "tok.swtok"), std::unique_ptr<Tokenizer>(SentencePieceTokenizer::from_model_file(d / "sp.model"))}) {
    EXPECT_EQ(u->type(), "sentencepiece");
    EXPECT_EQ(u->vocab_size(), t->vocab_size());
    EXPECT_EQ(u->mask_id(), t->mask_id());
    EXPECT_EQ(u->encode(s), ids);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, SentencePiece, ::testing::Values("bpe", "unigram"));

TEST(SentencePieceErrors, BadArgumentsAndCorpus) {
  TempDir d;
  std::string corpus = d.file("corpus.txt", small_corpus());
  EXPECT_CONTAINS(error_of([&] { train_sentencepiece(corpus, d / "m", 400, "wordpiece"); }), "wordpiece");
  EXPECT_THROW(train_sentencepiece(corpus, d / "m", 0, "bpe"), Error);
  std::string missing = d / "no_corpus.txt";
  EXPECT_CONTAINS(error_of([&] { train_sentencepiece(missing, d / "m", 400, "bpe"); }), missing);
  // Too small for the 256 byte pieces: SentencePiece refuses, and we say so naming the corpus.
  EXPECT_CONTAINS(error_of([&] { train_sentencepiece(corpus, d / "m", 50, "bpe"); }), corpus);
  EXPECT_FALSE(fs::exists(d / "m.model"));
  std::string bad = d.file("bad.model", "this is not a model");
  EXPECT_CONTAINS(error_of([&] { SentencePieceTokenizer::from_model_file(bad); }), bad);
}

}  // namespace
}  // namespace sw::io
