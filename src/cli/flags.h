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

#include "core/error.h"

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

}  // namespace lcmd
