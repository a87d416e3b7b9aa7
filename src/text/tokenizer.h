// The CLIP byte-level BPE tokenizer, producing exactly the ids of HuggingFace's CLIPTokenizer
// (transformers 4.33, slow tokenizer, with ftfy installed) as Stable Diffusion pipelines call it:
//
//   text -> split around special-token literals -> ftfy.fix_text -> collapse whitespace, strip
//        -> lowercase -> CLIP's pre-tokenizer regex -> UTF-8 bytes as GPT-2 byte symbols
//        -> BPE merges by rank ("</w>" on each word's last symbol) -> vocabulary ids
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lcmd {

class ClipTokenizer {
 public:
  // Reads vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json (the last two
  // if present) from `dir`, a diffusers `tokenizer/` folder. Throws ModelError naming the file and
  // the problem: a missing or malformed file, a malformed merge line, a model_max_length out of
  // range, or a BOS/EOS/pad/unk token that is not in the vocabulary. merges.txt may omit its
  // "#version" header.
  static ClipTokenizer from_dir(const std::filesystem::path& dir);

  // The tokenizer folder's files as bytes (a packed model embeds them): vocab.json and merges.txt,
  // and the two optional JSON configs.
  struct Files {
    std::string vocab_json, merges_txt;
    std::optional<std::string> tokenizer_config_json, special_tokens_map_json;
  };
  // Reads them from `dir`; ModelError when vocab.json or merges.txt is missing or unreadable.
  static Files read_files(const std::filesystem::path& dir);
  // As from_dir, from the files' contents; messages name them as `origin`/<file name>.
  static ClipTokenizer from_files(const Files& files, const std::filesystem::path& origin);

  // The pipeline's call, tokenizer(text, padding="max_length", max_length=model_max_length,
  // truncation=True): [BOS, tokenize(text)[:max_length-2]..., EOS, pad...], exactly
  // max_length() ids. Throws InputError if the text is not valid UTF-8.
  std::vector<int32_t> encode(std::string_view utf8_text) const;

  // The ids of the cleaned text, without BOS/EOS and not truncated. Special-token literals in the
  // text ("<|endoftext|>") become their ids. Throws InputError if the text is not valid UTF-8.
  std::vector<int32_t> tokenize(std::string_view utf8_text) const;

  int max_length() const { return max_length_; }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  int32_t unk_id() const { return unk_id_; }
  size_t vocab_size() const { return vocab_.size(); }

 private:
  ClipTokenizer() = default;

  struct Merge {
    int32_t rank;
    int32_t merged_symbol;
  };
  struct SpecialLiteral {
    std::u32string text;
    int32_t id;
  };

  void load_vocab(const std::string& contents, const std::filesystem::path& path);
  void load_merges(const std::string& contents, const std::filesystem::path& path);
  void intern_byte_symbols();
  // The id of a configured special token; it is also split out of prompts before cleaning.
  int32_t add_special_token(const char* role, const std::optional<std::string>& name,
                            const std::filesystem::path& dir);
  int32_t intern_symbol(const std::string& text);

  void tokenize_chunk(std::u32string_view chunk, std::vector<int32_t>& ids) const;
  void append_word_ids(std::u32string_view word, std::vector<int32_t>& ids) const;
  std::vector<int32_t> bpe(std::vector<int32_t> symbols) const;

  // Vocabulary: token text (GPT-2 byte symbols, "</w>" marking word ends) -> id.
  std::unordered_map<std::string, int32_t> vocab_;
  // BPE works on symbol indices: every string that occurs in a merge or as a single byte.
  std::unordered_map<std::string, int32_t> symbol_index_;
  std::vector<int32_t> symbol_token_id_;  // vocabulary id of each symbol (unk if not in vocab)
  std::unordered_map<uint64_t, Merge> merges_;  // (left symbol, right symbol) -> merge
  int32_t byte_symbol_[256] = {};               // symbol of each byte inside a word
  int32_t final_byte_symbol_[256] = {};         // symbol of each byte ending a word ("</w>")

  std::vector<SpecialLiteral> special_literals_;  // split out of the text before cleaning
  int max_length_ = 77;
  int32_t bos_id_ = 0, eos_id_ = 0, pad_id_ = 0, unk_id_ = 0;
};

}  // namespace lcmd
