#include "serve/bearer_auth.h"

#include <cctype>

#include "core/error.h"

namespace lcmd::serve {

namespace {

constexpr size_t kMaxKeyBytes = 1024;

bool is_token_char(char c) { return c > 0x20 && c < 0x7F; }

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  return true;
}

}  // namespace

bool constant_time_equals(std::string_view given, std::string_view expected) {
  // volatile: the compiler may neither skip the remaining bytes once a difference is known
  // nor turn the loop into a memcmp that returns early.
  volatile unsigned char difference = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    difference = difference | (g ^ static_cast<unsigned char>(expected[i]));
  }
  return difference == 0;
}

BearerAuth::BearerAuth(std::string api_key) : api_key_(std::move(api_key)) {
  if (api_key_.size() > kMaxKeyBytes)
    throw InputError("the API key must be at most " + std::to_string(kMaxKeyBytes) + " bytes");
  for (char c : api_key_)
    if (!is_token_char(c))
      throw InputError("the API key must be printable ASCII without spaces (it is sent as 'Authorization: Bearer KEY')");
}

BearerAuth::Verdict BearerAuth::check(std::string_view header) const {
  if (!enabled()) return Verdict::Allowed;
  // "Bearer" (any case, RFC 7235 auth-scheme), one or more spaces, the token.
  constexpr std::string_view kScheme = "bearer";
  if (header.empty()) return Verdict::MissingCredentials;
  if (header.size() <= kScheme.size() || !equals_ignoring_case(header.substr(0, kScheme.size()), kScheme) ||
      header[kScheme.size()] != ' ')
    return Verdict::WrongCredentials;
  std::string_view token = header.substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  return constant_time_equals(token, api_key_) ? Verdict::Allowed : Verdict::WrongCredentials;
}

}  // namespace lcmd::serve
