// The CLIP tokenizer on arbitrary prompt bytes, with the real vocabulary and merges (read from
// the shared reference data at start, never copied into the repository): text cleaning (ftfy's
// fix_text port, mojibake repair, HTML entities), the pre-tokenizer and BPE. A prompt encodes to
// exactly max_length ids from the vocabulary, or is refused with InputError (invalid UTF-8).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>

#include "core/error.h"
#include "fuzz_support.h"
#include "text/tokenizer.h"

namespace {

std::unique_ptr<lcmd::ClipTokenizer> tokenizer;

void check(bool condition) {
  if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const auto dir = lcmd::fuzz::shared_dir() / "golden/tokenizer";
  try {
    tokenizer = std::make_unique<lcmd::ClipTokenizer>(lcmd::ClipTokenizer::from_dir(dir));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_tokenizer needs the CLIP tokenizer files (set LCMD_SHARED): %s\n", e.what());
    std::exit(1);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const std::vector<int32_t> ids = tokenizer->encode(text);
    check(ids.size() == static_cast<size_t>(tokenizer->max_length()));
    check(ids.front() == tokenizer->bos_id());
    for (int32_t id : ids) check(id >= 0 && static_cast<size_t>(id) < tokenizer->vocab_size());
  } catch (const lcmd::InputError&) {
    // Invalid UTF-8: the documented refusal.
  }
  return 0;
}
