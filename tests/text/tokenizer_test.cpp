#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "support/test_support.h"
#include "text/tokenizer.h"

namespace lcmd {
namespace {

namespace fs = std::filesystem;

fs::path golden_tokenizer_dir() { return test::golden_dir() / "tokenizer"; }

const ClipTokenizer& golden_tokenizer() {
  static const ClipTokenizer tokenizer = ClipTokenizer::from_dir(golden_tokenizer_dir());
  return tokenizer;
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path.string());
  return nlohmann::json::parse(in);
}

const nlohmann::json& golden_cases() {
  static const nlohmann::json cases = read_json(golden_tokenizer_dir() / "cases.json");
  return cases;
}

std::vector<int32_t> ids_of(const nlohmann::json& array) { return array.get<std::vector<int32_t>>(); }

std::string case_text(std::string_view name) {
  for (const auto& c : golden_cases())
    if (c["name"] == name) return c["text"].get<std::string>();
  throw std::runtime_error("no golden tokenizer case named " + std::string(name));
}

void write_file(const fs::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary);
  out << contents;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A copy of the golden tokenizer folder, to break one file at a time.
struct TokenizerCopy {
  test::TempDir dir;
  TokenizerCopy() {
    for (const char* name : {"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"})
      fs::copy_file(golden_tokenizer_dir() / name, dir.path() / name);
  }
};

// The ModelError message, or "" if loading succeeds or throws something else.
std::string model_error_of(const fs::path& dir) {
  try {
    ClipTokenizer::from_dir(dir);
  } catch (const ModelError& e) {
    return e.what();
  }
  return "";
}

TEST(ClipTokenizer, ReadsSpecialTokensAndLengthFromConfig) {
  const ClipTokenizer& tok = golden_tokenizer();
  EXPECT_EQ(tok.max_length(), 77);
  EXPECT_EQ(tok.bos_id(), 49406);
  EXPECT_EQ(tok.eos_id(), 49407);
  EXPECT_EQ(tok.pad_id(), 49407);  // SD1.5 pads with <|endoftext|>, not 0
  EXPECT_EQ(tok.vocab_size(), 49408u);
}

TEST(ClipTokenizer, MatchesEveryGoldenCase) {
  const ClipTokenizer& tok = golden_tokenizer();
  ASSERT_EQ(golden_cases().size(), 42u);
  for (const auto& c : golden_cases()) {
    const std::string name = c["name"].get<std::string>();
    const std::string text = c["text"].get<std::string>();
    // Our ftfy port repairs mojibake too, so even `mojibake` must give HF-with-ftfy's ids.
    EXPECT_EQ(tok.encode(text), ids_of(c["input_ids"])) << "case " << name;
    // The recorded count comes from openai's tokenizer, so it only holds where that agrees.
    if (!c["openai_simple_tokenizer_matches"].get<bool>()) continue;
    const size_t before_truncation = c["n_tokens_before_truncation"].get<size_t>();
    EXPECT_EQ(tok.tokenize(text).size() + 2, before_truncation) << "case " << name;
  }
}

TEST(ClipTokenizer, DiffersFromTokenizersWithoutFtfyWhereTheGoldenDataSaysSo) {
  // Guards the test above: the cases that need ftfy really tell the two apart.
  const ClipTokenizer& tok = golden_tokenizer();
  int cases_needing_ftfy = 0;
  for (const auto& c : golden_cases()) {
    if (!c.contains("input_ids_hf_without_ftfy")) continue;
    ++cases_needing_ftfy;
    EXPECT_NE(tok.encode(c["text"].get<std::string>()), ids_of(c["input_ids_hf_without_ftfy"]))
        << "case " << c["name"].get<std::string>();
  }
  EXPECT_EQ(cases_needing_ftfy, 8);
}

TEST(ClipTokenizer, TinyModelTokenizerGivesTheSameIds) {
  const ClipTokenizer tiny = ClipTokenizer::from_dir(test::golden_dir() / "tiny-lcm" / "tokenizer");
  EXPECT_EQ(tiny.vocab_size(), golden_tokenizer().vocab_size());
  for (const auto& c : golden_cases())
    EXPECT_EQ(tiny.encode(c["text"].get<std::string>()), ids_of(c["input_ids"])) << c["name"].get<std::string>();
}

TEST(ClipTokenizer, MatchesTextEncoderCaseInputIds) {
  const fs::path cases_dir = test::golden_dir() / "tiny-lcm-cases";
  const nlohmann::json index = read_json(cases_dir / "index.json");
  const ClipTokenizer tiny = ClipTokenizer::from_dir(test::golden_dir() / "tiny-lcm" / "tokenizer");
  ASSERT_FALSE(index["text_encoder"].empty());
  for (const auto& c : index["text_encoder"]) {
    const std::string prompt = c["prompt"].get<std::string>();
    const test::Npy ref = test::load_npy(cases_dir / c["input_ids"].get<std::string>());
    ASSERT_EQ(ref.dtype, "<i8");
    ASSERT_EQ(ref.i64.size(), 77u);
    const std::vector<int32_t> expected(ref.i64.begin(), ref.i64.end());
    EXPECT_EQ(tiny.encode(prompt), expected) << "prompt \"" << prompt << "\"";
  }
}

TEST(ClipTokenizer, TruncatesToMaxLengthKeepingEos) {
  const ClipTokenizer& tok = golden_tokenizer();
  std::string prompt;
  for (int i = 0; i < 100; ++i) prompt += "cat ";
  const std::vector<int32_t> ids = tok.encode(prompt);
  ASSERT_EQ(ids.size(), 77u);
  EXPECT_EQ(ids.front(), tok.bos_id());
  EXPECT_EQ(ids.back(), tok.eos_id());
  EXPECT_EQ(tok.tokenize(prompt).size(), 100u);
  EXPECT_EQ(ids[75], ids[1]);  // still "cat" right before EOS
}

TEST(ClipTokenizer, SpecialTokenLiteralsBecomeTheirIds) {
  const ClipTokenizer& tok = golden_tokenizer();
  EXPECT_EQ(tok.tokenize("<|endoftext|>"), (std::vector<int32_t>{49407}));
  // Upper case is not split out first, but lowercasing and the pre-tokenizer regex still keep
  // the literal whole.
  EXPECT_EQ(tok.tokenize("<|STARTOFTEXT|>"), (std::vector<int32_t>{49406}));
  // Split out before cleaning, so a '<' in a special token does not stop HTML unescaping around it.
  EXPECT_EQ(tok.tokenize("a <|endoftext|> &amp;"), tok.tokenize("a <|endoftext|> &"));
  EXPECT_NE(tok.tokenize("a <b> &amp;"), tok.tokenize("a <b> &"));
}

TEST(ClipTokenizer, CleansTextLikeHfWithFtfy) {
  const ClipTokenizer& tok = golden_tokenizer();
  EXPECT_EQ(tok.tokenize("  A\u00a0Cat\t\n"), tok.tokenize("a cat"));
  EXPECT_EQ(tok.tokenize("\u201cCAT\u201d"), tok.tokenize("\"cat\""));
  EXPECT_EQ(tok.tokenize("\uff23\uff41\uff54"), tok.tokenize("cat"));  // full-width
  EXPECT_EQ(tok.tokenize("e\u0301"), tok.tokenize("\u00e9"));          // NFC
  EXPECT_EQ(tok.tokenize("\x1b[1mcat\x1b[0m"), tok.tokenize("cat"));   // terminal escapes
  EXPECT_EQ(tok.tokenize("schÃ¶n"), tok.tokenize("schön"));            // mojibake
  // Python's lower(): U+0130 becomes "i" + U+0307, which the regex splits into two pieces.
  EXPECT_EQ(tok.tokenize("\u0130"), tok.tokenize("i\u0307"));
  EXPECT_EQ(tok.tokenize("\u0130").size(), 2u);
}

TEST(ClipTokenizer, RejectsInvalidUtf8) {
  const ClipTokenizer& tok = golden_tokenizer();
  for (std::string_view bad : {std::string_view("caf\xe9"), std::string_view("\xed\xa0\x80"),
                               std::string_view("\xc0\xaf"), std::string_view("ok\xf0\x9f")}) {
    try {
      tok.encode(bad);
      ADD_FAILURE() << "accepted invalid UTF-8";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("UTF-8"), std::string::npos) << e.what();
    }
  }
}

TEST(ClipTokenizer, EncodesQuickly) {
  const ClipTokenizer& tok = golden_tokenizer();
  const std::string prompt = case_text("long_truncation");
  tok.encode(prompt);
  const auto start = std::chrono::steady_clock::now();
  constexpr int kRuns = 20;
  for (int i = 0; i < kRuns; ++i) tok.encode(prompt);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(ms / kRuns, 1.0) << "encoding a long prompt takes " << ms / kRuns << " ms";
}

TEST(ClipTokenizerErrors, MissingVocabNamesTheFile) {
  TokenizerCopy copy;
  fs::remove(copy.dir.path() / "vocab.json");
  const std::string message = model_error_of(copy.dir.path());
  EXPECT_NE(message.find("vocab.json"), std::string::npos) << message;
}

TEST(ClipTokenizerErrors, MalformedVocabJsonNamesTheFile) {
  TokenizerCopy copy;
  write_file(copy.dir.path() / "vocab.json", "{\"a\": 1, \"b\": ");
  const std::string message = model_error_of(copy.dir.path());
  EXPECT_NE(message.find("vocab.json"), std::string::npos) << message;
  EXPECT_NE(message.find("malformed JSON"), std::string::npos) << message;
}

TEST(ClipTokenizerErrors, NonIntegerVocabIdNamesTheToken) {
  TokenizerCopy copy;
  write_file(copy.dir.path() / "vocab.json", "{\"a\": 1, \"b</w>\": \"two\"}");
  const std::string message = model_error_of(copy.dir.path());
  EXPECT_NE(message.find("b</w>"), std::string::npos) << message;
}

TEST(ClipTokenizerErrors, MissingMergesNamesTheFile) {
  TokenizerCopy copy;
  fs::remove(copy.dir.path() / "merges.txt");
  const std::string message = model_error_of(copy.dir.path());
  EXPECT_NE(message.find("merges.txt"), std::string::npos) << message;
}

TEST(ClipTokenizerErrors, MalformedMergeLineNamesTheLine) {
  TokenizerCopy copy;
  std::string merges = read_text(copy.dir.path() / "merges.txt");
  merges.insert(merges.find('\n', merges.find('\n') + 1) + 1, "x y z\n");  // becomes line 3
  write_file(copy.dir.path() / "merges.txt", merges);
  const std::string message = model_error_of(copy.dir.path());
  EXPECT_NE(message.find("merges.txt: line 3"), std::string::npos) << message;
}

TEST(ClipTokenizerErrors, MergesWithoutVersionHeaderAreAccepted) {
  TokenizerCopy copy;
  const std::string merges = read_text(copy.dir.path() / "merges.txt");
  ASSERT_EQ(merges.rfind("#version", 0), 0u);
  write_file(copy.dir.path() / "merges.txt", merges.substr(merges.find('\n') + 1));
  const ClipTokenizer tok = ClipTokenizer::from_dir(copy.dir.path());
  EXPECT_EQ(tok.encode("a photo of a cat"), golden_tokenizer().encode("a photo of a cat"));
}

TEST(ClipTokenizerErrors, SpecialTokenMissingFromVocabIsNamed) {
  TokenizerCopy copy;
  write_file(copy.dir.path() / "special_tokens_map.json", R"({"bos_token": "<|nosuchtoken|>"})");
  const std::string message = model_error_of(copy.dir.path());
  EXPECT_NE(message.find("bos_token"), std::string::npos) << message;
  EXPECT_NE(message.find("<|nosuchtoken|>"), std::string::npos) << message;
}

TEST(ClipTokenizerErrors, ModelMaxLengthOutOfRangeIsNamed) {
  TokenizerCopy copy;
  nlohmann::json config = read_json(copy.dir.path() / "tokenizer_config.json");
  config["model_max_length"] = 1;
  write_file(copy.dir.path() / "tokenizer_config.json", config.dump());
  const std::string message = model_error_of(copy.dir.path());
  EXPECT_NE(message.find("model_max_length"), std::string::npos) << message;
}

TEST(ClipTokenizerConfig, PadTokenAndLengthFollowTheConfig) {
  TokenizerCopy copy;
  nlohmann::json config = read_json(copy.dir.path() / "tokenizer_config.json");
  config["model_max_length"] = 10;
  config["pad_token"] = "!";  // as SD 2.x ships it
  write_file(copy.dir.path() / "tokenizer_config.json", config.dump());
  fs::remove(copy.dir.path() / "special_tokens_map.json");
  const ClipTokenizer tok = ClipTokenizer::from_dir(copy.dir.path());
  EXPECT_EQ(tok.max_length(), 10);
  EXPECT_EQ(tok.pad_id(), 0);
  EXPECT_EQ(tok.encode("a cat"), (std::vector<int32_t>{49406, 320, 2368, 49407, 0, 0, 0, 0, 0, 0}));
}

}  // namespace
}  // namespace lcmd
