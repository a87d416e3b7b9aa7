#include "text/tokenizer.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>

#include "core/error.h"
#include "text/text_fix.h"
#include "text/unicode.h"

namespace lcmd {

namespace fs = std::filesystem;
using text::is_letter;
using text::is_number;
using text::is_python_space;

namespace {

// HF's CLIPTokenizer reads at most this many merges (49152 - 256 - 2), which is exactly what
// the CLIP vocabulary of 49408 tokens has room for.
constexpr size_t kMaxMerges = 49152 - 256 - 2;
constexpr int kMinModelMaxLength = 2;  // room for BOS and EOS
constexpr int kMaxModelMaxLength = 65536;
constexpr std::string_view kEndOfWord = "</w>";

// The two special tokens CLIP's pre-tokenizer regex keeps whole (and its BPE cache maps to
// themselves), whatever the configuration names as special tokens.
constexpr std::u32string_view kRegexSpecialTokens[] = {U"<|startoftext|>", U"<|endoftext|>"};
constexpr std::u32string_view kContractions[] = {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};

std::string read_file(const fs::path& path, std::string_view what) {
  const std::string where = "tokenizer " + std::string(what) + " " + path.string();
  if (!fs::exists(path)) throw ModelError(where + ": file not found");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError(where + ": cannot open file");
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

nlohmann::json parse_json(const std::string& contents, const fs::path& path, std::string_view what) {
  try {
    return nlohmann::json::parse(contents);
  } catch (const nlohmann::json::exception& e) {
    throw ModelError("tokenizer " + std::string(what) + " " + path.string() + ": malformed JSON: " + e.what());
  }
}

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100.. in byte order, so that every byte has a visible, non-space character.
std::string byte_symbol_text(uint8_t byte) {
  auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
  char32_t c = byte;
  if (!printable(byte)) {
    int shifted = 0;
    for (int b = 0; b < byte; ++b) shifted += printable(b) ? 0 : 1;
    c = 256 + static_cast<char32_t>(shifted);
  }
  std::string utf8;
  text::append_utf8(utf8, c);
  return utf8;
}

std::vector<std::string_view> split_on_spaces(std::string_view line) {
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
    if (i > start) parts.push_back(line.substr(start, i - start));
  }
  return parts;
}

// A special token as tokenizer_config.json / special_tokens_map.json write it: a string, an
// AddedToken object with "content", or null (no such token).
std::optional<std::string> token_name(const nlohmann::json& value, const fs::path& file, const std::string& key) {
  if (value.is_null()) return std::nullopt;
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value["content"].is_string())
    return value["content"].get<std::string>();
  throw ModelError("tokenizer config " + file.string() + ": " + key +
                   " must be a string or an object with a string \"content\"");
}

struct TokenConfig {
  std::optional<std::string> bos = "<|startoftext|>", eos = "<|endoftext|>", pad = "<|endoftext|>",
                             unk = "<|endoftext|>";
  int max_length = 77;
};

void apply_token_names(const nlohmann::json& config, const fs::path& file, TokenConfig& tokens) {
  if (!config.is_object()) throw ModelError("tokenizer config " + file.string() + ": expected a JSON object");
  const std::pair<const char*, std::optional<std::string>*> fields[] = {
      {"bos_token", &tokens.bos}, {"eos_token", &tokens.eos}, {"pad_token", &tokens.pad}, {"unk_token", &tokens.unk}};
  for (auto [key, slot] : fields)
    if (config.contains(key)) *slot = token_name(config[key], file, key);
}

int read_model_max_length(const nlohmann::json& config, const fs::path& file) {
  if (!config.contains("model_max_length")) return 77;
  const auto& value = config["model_max_length"];
  const bool in_range = value.is_number_integer() && value.get<int64_t>() >= kMinModelMaxLength &&
                        value.get<int64_t>() <= kMaxModelMaxLength;
  if (!in_range)
    throw ModelError("tokenizer config " + file.string() + ": model_max_length " + value.dump() +
                     " is not an integer in [" + std::to_string(kMinModelMaxLength) + ", " +
                     std::to_string(kMaxModelMaxLength) + "]");
  return static_cast<int>(value.get<int64_t>());
}

// tokenizer_config.json, then special_tokens_map.json, which HF lets override the former.
TokenConfig read_token_config(const ClipTokenizer::Files& files, const fs::path& origin) {
  TokenConfig config;
  if (files.tokenizer_config_json) {
    const fs::path config_path = origin / "tokenizer_config.json";
    const nlohmann::json json = parse_json(*files.tokenizer_config_json, config_path, "config");
    apply_token_names(json, config_path, config);
    config.max_length = read_model_max_length(json, config_path);
  }
  if (files.special_tokens_map_json) {
    const fs::path map_path = origin / "special_tokens_map.json";
    apply_token_names(parse_json(*files.special_tokens_map_json, map_path, "special tokens map"), map_path, config);
  }
  return config;
}

// Python's re.sub(r"\s+", " ", text).strip()
std::u32string collapse_whitespace(std::u32string_view text) {
  std::u32string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char32_t c : text) {
    if (is_python_space(c)) {
      pending_space = true;
      continue;
    }
    if (pending_space && !out.empty()) out.push_back(U' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

// A literal alternative of the pre-tokenizer regex, matched with IGNORECASE. The text is already
// lowercase; the one character that still case-matches a letter of these literals is U+017F
// LATIN SMALL LETTER LONG S, which matches 's'.
bool literal_matches(std::u32string_view text, size_t i, std::u32string_view literal) {
  if (i + literal.size() > text.size()) return false;
  for (size_t k = 0; k < literal.size(); ++k) {
    const char32_t c = text[i + k] == 0x017F ? U's' : text[i + k];
    if (c != literal[k]) return false;
  }
  return true;
}

// Length of the match of CLIP's pre-tokenizer regex at i, or 0 (a space):
//   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
size_t pretoken_length(std::u32string_view text, size_t i) {
  for (auto literal : kRegexSpecialTokens)
    if (literal_matches(text, i, literal)) return literal.size();
  for (auto literal : kContractions)
    if (literal_matches(text, i, literal)) return literal.size();
  const char32_t c = text[i];
  if (is_letter(c)) {
    size_t j = i + 1;
    while (j < text.size() && is_letter(text[j])) ++j;
    return j - i;
  }
  if (is_number(c)) return 1;
  auto is_other = [](char32_t x) { return !is_python_space(x) && !is_letter(x) && !is_number(x); };
  size_t j = i;
  while (j < text.size() && is_other(text[j])) ++j;
  return j - i;
}

// Reads vocab.json as a stream of events rather than building a JSON tree: the vocabulary is
// ~50k entries and this keeps loading in the tens of milliseconds.
class VocabReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  explicit VocabReader(std::unordered_map<std::string, int32_t>& vocab) : vocab_(vocab) {}

  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool number_integer(number_integer_t v) override { return add(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return v <= static_cast<number_unsigned_t>(std::numeric_limits<int32_t>::max()) ? add(static_cast<int64_t>(v))
                                                                                     : reject(std::to_string(v));
  }
  bool number_float(number_float_t, const string_t& s) override { return reject(s); }
  bool string(string_t& v) override { return reject("\"" + v + "\""); }
  bool boolean(bool v) override { return reject(v ? "true" : "false"); }
  bool null() override { return reject("null"); }
  bool binary(binary_t&) override { return reject("binary data"); }
  bool start_object(std::size_t) override { return ++depth_ == 1 || reject("an object"); }
  bool end_object() override { return --depth_ >= 0; }
  bool start_array(std::size_t) override { return depth_ == 0 ? top_level_not_object() : reject("an array"); }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error_ = std::string("malformed JSON: ") + e.what();
    return false;
  }

  const std::string& error() const { return error_; }

 private:
  bool add(int64_t id) {
    if (depth_ != 1) return top_level_not_object();
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) return reject(std::to_string(id));
    vocab_.insert_or_assign(std::move(key_), static_cast<int32_t>(id));  // json.load: a repeated key's last id
    return true;
  }
  bool reject(const std::string& value) {
    if (depth_ == 0) return top_level_not_object();
    error_ = "token \"" + key_ + "\" has id " + value + ", expected a non-negative 32-bit integer";
    return false;
  }
  bool top_level_not_object() {
    error_ = "expected a JSON object of token -> id";
    return false;
  }

  std::unordered_map<std::string, int32_t>& vocab_;
  std::string key_;
  std::string error_;
  int depth_ = 0;
};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

}  // namespace

ClipTokenizer::Files ClipTokenizer::read_files(const fs::path& dir) {
  if (!fs::is_directory(dir)) throw ModelError("tokenizer folder " + dir.string() + " does not exist");
  Files files;
  files.vocab_json = read_file(dir / "vocab.json", "vocabulary");
  files.merges_txt = read_file(dir / "merges.txt", "merges");
  if (fs::exists(dir / "tokenizer_config.json")) files.tokenizer_config_json = read_file(dir / "tokenizer_config.json", "config");
  if (fs::exists(dir / "special_tokens_map.json"))
    files.special_tokens_map_json = read_file(dir / "special_tokens_map.json", "special tokens map");
  return files;
}

ClipTokenizer ClipTokenizer::from_dir(const fs::path& dir) { return from_files(read_files(dir), dir); }

ClipTokenizer ClipTokenizer::from_files(const Files& files, const fs::path& origin) {
  ClipTokenizer tok;
  tok.load_vocab(files.vocab_json, origin / "vocab.json");
  const TokenConfig config = read_token_config(files, origin);
  tok.max_length_ = config.max_length;
  tok.intern_byte_symbols();
  tok.load_merges(files.merges_txt, origin / "merges.txt");
  tok.bos_id_ = tok.add_special_token("bos_token", config.bos, origin);
  tok.eos_id_ = tok.add_special_token("eos_token", config.eos, origin);
  tok.pad_id_ = tok.add_special_token("pad_token", config.pad, origin);
  tok.unk_id_ = tok.add_special_token("unk_token", config.unk, origin);
  return tok;
}

void ClipTokenizer::intern_byte_symbols() {
  for (int b = 0; b < 256; ++b) {
    const std::string symbol = byte_symbol_text(static_cast<uint8_t>(b));
    byte_symbol_[b] = intern_symbol(symbol);
    final_byte_symbol_[b] = intern_symbol(symbol + std::string(kEndOfWord));
  }
}

int32_t ClipTokenizer::add_special_token(const char* role, const std::optional<std::string>& name,
                                         const fs::path& dir) {
  if (!name) throw ModelError("tokenizer " + dir.string() + ": no " + role + " is configured");
  auto it = vocab_.find(*name);
  if (it == vocab_.end())
    throw ModelError("tokenizer " + dir.string() + ": " + role + " \"" + *name + "\" is not in vocab.json");
  const auto literal = text::decode_utf8(*name);
  if (!literal || literal->empty())
    throw ModelError("tokenizer " + dir.string() + ": " + role + " must be non-empty UTF-8");
  auto same = [&](const SpecialLiteral& s) { return s.text == *literal; };
  if (std::none_of(special_literals_.begin(), special_literals_.end(), same))
    special_literals_.push_back({*literal, it->second});
  return it->second;
}

void ClipTokenizer::load_vocab(const std::string& contents, const fs::path& path) {
  vocab_.reserve(kMaxMerges + 1024);
  VocabReader reader(vocab_);
  const bool ok = nlohmann::json::sax_parse(contents, &reader);
  if (!ok || vocab_.empty()) {
    const std::string problem =
        reader.error().empty() ? "expected a non-empty JSON object of token -> id" : reader.error();
    throw ModelError("tokenizer vocabulary " + path.string() + ": " + problem);
  }
}

void ClipTokenizer::load_merges(const std::string& contents, const fs::path& path) {
  const std::string_view all(contents);
  size_t line_number = 0;
  int32_t rank = 0;
  merges_.reserve(kMaxMerges);
  symbol_index_.reserve(2 * kMaxMerges);
  symbol_token_id_.reserve(2 * kMaxMerges);
  std::string merged_text;
  for (size_t start = 0; start < all.size() && static_cast<size_t>(rank) < kMaxMerges;) {
    const size_t newline = std::min(all.find('\n', start), all.size());
    std::string_view line = all.substr(start, newline - start);
    start = newline + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line_number == 1 && line.rfind("#version", 0) == 0) continue;
    const std::vector<std::string_view> parts = split_on_spaces(line);
    if (parts.empty()) continue;
    if (parts.size() != 2)
      throw ModelError("tokenizer merges " + path.string() + ": line " + std::to_string(line_number) +
                       " is not two symbols separated by a space: \"" + std::string(line) + "\"");
    merged_text.assign(parts[0]).append(parts[1]);
    const int32_t left = intern_symbol(std::string(parts[0]));
    const int32_t right = intern_symbol(std::string(parts[1]));
    const int32_t merged = intern_symbol(merged_text);
    // Python's dict(zip(merges, ranks)): a repeated pair keeps its last rank.
    merges_.insert_or_assign(pair_key(left, right), Merge{rank++, merged});
  }
  if (rank == 0) throw ModelError("tokenizer merges " + path.string() + ": no merges");
}

int32_t ClipTokenizer::intern_symbol(const std::string& text) {
  auto [it, inserted] = symbol_index_.emplace(text, static_cast<int32_t>(symbol_token_id_.size()));
  if (inserted) {
    auto vocab_it = vocab_.find(text);
    symbol_token_id_.push_back(vocab_it == vocab_.end() ? -1 : vocab_it->second);
  }
  return it->second;
}

std::vector<int32_t> ClipTokenizer::encode(std::string_view utf8_text) const {
  std::vector<int32_t> body = tokenize(utf8_text);
  const size_t room = static_cast<size_t>(max_length_) - 2;
  if (body.size() > room) body.resize(room);
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(max_length_));
  ids.push_back(bos_id_);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.push_back(eos_id_);
  ids.resize(static_cast<size_t>(max_length_), pad_id_);
  return ids;
}

std::vector<int32_t> ClipTokenizer::tokenize(std::string_view utf8_text) const {
  size_t bad_offset = 0;
  const auto decoded = text::decode_utf8(utf8_text, &bad_offset);
  if (!decoded)
    throw InputError("prompt is not valid UTF-8 (bad byte sequence at byte " + std::to_string(bad_offset) + ")");

  // Like HF, special-token literals are split out before the text is cleaned (exact match).
  const std::u32string& input = *decoded;
  std::vector<int32_t> ids;
  size_t chunk_start = 0, i = 0;
  while (i < input.size()) {
    const SpecialLiteral* best = nullptr;
    for (const auto& special : special_literals_)
      if (input.compare(i, special.text.size(), special.text) == 0 &&
          (!best || special.text.size() > best->text.size()))
        best = &special;
    if (!best) {
      ++i;
      continue;
    }
    tokenize_chunk(std::u32string_view(input).substr(chunk_start, i - chunk_start), ids);
    ids.push_back(best->id);
    i += best->text.size();
    chunk_start = i;
  }
  tokenize_chunk(std::u32string_view(input).substr(chunk_start), ids);
  return ids;
}

void ClipTokenizer::tokenize_chunk(std::u32string_view chunk, std::vector<int32_t>& ids) const {
  if (chunk.empty()) return;
  const std::u32string cleaned = text::python_lower(collapse_whitespace(text::fix_text(chunk)));
  size_t i = 0;
  while (i < cleaned.size()) {
    const size_t length = pretoken_length(cleaned, i);
    if (length == 0) {
      ++i;
      continue;
    }
    append_word_ids(std::u32string_view(cleaned).substr(i, length), ids);
    i += length;
  }
}

void ClipTokenizer::append_word_ids(std::u32string_view word, std::vector<int32_t>& ids) const {
  for (auto special : kRegexSpecialTokens) {
    if (word != special) continue;
    auto it = vocab_.find(text::encode_utf8(word));
    ids.push_back(it == vocab_.end() ? unk_id_ : it->second);
    return;
  }
  const std::string bytes = text::encode_utf8(word);
  std::vector<int32_t> symbols(bytes.size());
  for (size_t k = 0; k < bytes.size(); ++k) {
    const auto b = static_cast<uint8_t>(bytes[k]);
    symbols[k] = k + 1 == bytes.size() ? final_byte_symbol_[b] : byte_symbol_[b];
  }
  for (int32_t symbol : bpe(std::move(symbols))) {
    const int32_t id = symbol_token_id_[static_cast<size_t>(symbol)];
    ids.push_back(id < 0 ? unk_id_ : id);
  }
}

// Repeatedly merges the adjacent pair of lowest rank, every non-overlapping occurrence of it
// left to right, until no adjacent pair has a merge (HF CLIPTokenizer.bpe).
std::vector<int32_t> ClipTokenizer::bpe(std::vector<int32_t> symbols) const {
  while (symbols.size() > 1) {
    const Merge* best = nullptr;
    int32_t first = 0, second = 0;
    for (size_t k = 0; k + 1 < symbols.size(); ++k) {
      auto it = merges_.find(pair_key(symbols[k], symbols[k + 1]));
      if (it != merges_.end() && (!best || it->second.rank < best->rank)) {
        best = &it->second;
        first = symbols[k];
        second = symbols[k + 1];
      }
    }
    if (!best) break;
    std::vector<int32_t> merged;
    merged.reserve(symbols.size());
    for (size_t k = 0; k < symbols.size(); ++k) {
      if (k + 1 < symbols.size() && symbols[k] == first && symbols[k + 1] == second) {
        merged.push_back(best->merged_symbol);
        ++k;
      } else {
        merged.push_back(symbols[k]);
      }
    }
    symbols = std::move(merged);
  }
  return symbols;
}

}  // namespace lcmd
