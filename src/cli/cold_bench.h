// `lcmd bench --cold --model PATH`: process start -> model ready and -> first image, with the
// model in the page cache and evicted from it (cold_bench.cpp).
#pragma once
#include <filesystem>
#include <string>

namespace lcmd {

int run_cold_bench(const std::filesystem::path& model, const std::string& precision, int repeat, bool json);

}  // namespace lcmd
