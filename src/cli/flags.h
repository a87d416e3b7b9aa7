// Command-line flags of one lcmd command: --name value, --name=value, or --name for switches.
// Unknown flags, missing values and out-of-range numbers are InputErrors naming the flag.
#pragma once
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "lcmd/engine.h"

namespace lcmd {

// Flags of one command: --name value, or --name alone for switches.
class Flags {
 public:
  Flags(int argc, char** argv, const std::set<std::string>& valued, const std::set<std::string>& switches) {
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) throw InputError("unexpected argument '" + a + "' (flags start with --)");
      std::string name = a.substr(2), value;
      const size_t eq = name.find('=');
      const bool inline_value = eq != std::string::npos;
      if (inline_value) value = name.substr(eq + 1), name = name.substr(0, eq);
      if (switches.count(name)) {
        if (inline_value) throw InputError("--" + name + " takes no value");
        values_[name] = "";
      } else if (valued.count(name)) {
        if (!inline_value) {
          if (i + 1 >= argc) throw InputError("--" + name + " needs a value");
          value = argv[++i];
        }
        if (values_.count(name)) throw InputError("--" + name + " given twice");
        values_[name] = value;
      } else {
        throw InputError("unknown flag --" + name + " for '" + argv[1] + "' (see lcmd --help)");
      }
    }
  }
  bool has(const std::string& n) const { return values_.count(n) > 0; }
  std::string str(const std::string& n, const std::string& def = "") const { return has(n) ? values_.at(n) : def; }
  std::string required(const std::string& n) const {
    if (!has(n)) throw InputError("--" + n + " is required");
    return values_.at(n);
  }
  int64_t integer(const std::string& n, int64_t def, int64_t lo, int64_t hi) const {
    if (!has(n)) return def;
    const std::string& v = values_.at(n);
    char* end = nullptr;
    errno = 0;
    const long long x = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno == ERANGE || x < lo || x > hi)
      throw InputError("--" + n + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" +
                       v + "'");
    return x;
  }
  uint64_t unsigned64(const std::string& n) const {
    const std::string& v = values_.at(n);
    char* end = nullptr;
    errno = 0;
    const unsigned long long x = std::strtoull(v.c_str(), &end, 10);
    if (v.empty() || v[0] == '-' || *end != '\0' || errno == ERANGE)
      throw InputError("--" + n + " must be an integer in 0..18446744073709551615, got '" + v + "'");
    return x;
  }
  double number(const std::string& n, double def) const {
    if (!has(n)) return def;
    const std::string& v = values_.at(n);
    char* end = nullptr;
    const double x = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !std::isfinite(x)) throw InputError("--" + n + " must be a finite number, got '" + v + "'");
    return x;
  }

 private:
  std::map<std::string, std::string> values_;
};

// "FILE[:SCALE]": the scale is what follows the last ':' when it is a number (paths may hold ':').
// `what` names the source in messages (a flag such as "--lora", or an environment variable).
inline LoraSpec parse_lora(const std::string& value, const std::string& what = "--lora") {
  if (value.empty() || value.rfind("--", 0) == 0)
    throw InputError(what + " needs a file (FILE or FILE:SCALE), got '" + value + "'");
  LoraSpec spec{value, 1.0};
  const size_t colon = value.rfind(':');
  if (colon == std::string::npos) return spec;
  const std::string scale = value.substr(colon + 1);
  char* end = nullptr;
  const double x = std::strtod(scale.c_str(), &end);
  if (scale.empty() || *end != '\0') return spec;
  if (!std::isfinite(x)) throw InputError(what + " scale must be a finite number, got '" + scale + "'");
  if (colon == 0) throw InputError(what + " needs a file before the scale, got '" + value + "'");
  spec.path = value.substr(0, colon);
  spec.scale = x;
  return spec;
}

// A comma-separated list of FILE[:SCALE] (the LCMD_LORA environment variable: one variable for
// several LoRAs; commas, unlike colons, do not occur in the scale syntax). Empty items are refused.
inline std::vector<LoraSpec> parse_lora_list(const std::string& list, const std::string& what) {
  std::vector<LoraSpec> loras;
  size_t start = 0;
  for (;;) {
    const size_t comma = list.find(',', start);
    const std::string item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (item.empty()) throw InputError(what + " has an empty item in '" + list + "' (FILE[:SCALE],FILE[:SCALE]...)");
    loras.push_back(parse_lora(item, what));
    if (comma == std::string::npos) return loras;
    start = comma + 1;
  }
}

// Takes every --lora out of the arguments (the one repeatable flag); the rest go to Flags.
inline std::vector<LoraSpec> take_loras(int& argc, char** argv) {
  std::vector<LoraSpec> loras;
  int kept = 2;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--lora") {
      if (i + 1 >= argc) throw InputError("--lora needs a value (FILE or FILE:SCALE)");
      loras.push_back(parse_lora(argv[++i]));
    } else if (a.rfind("--lora=", 0) == 0) {
      loras.push_back(parse_lora(a.substr(7)));
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  return loras;
}

}  // namespace lcmd
