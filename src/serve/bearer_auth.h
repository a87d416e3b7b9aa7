// The HTTP server's optional API key (`lcmd serve --api-key KEY` / LCMD_API_KEY): requests must
// carry "Authorization: Bearer KEY" (RFC 6750). The key is compared in constant time, so the
// time of a refusal tells nothing about how many leading bytes of a guess were right.
#pragma once
#include <string>
#include <string_view>

namespace lcmd::serve {

// True when `given` equals `expected`. The time taken depends on expected.size() only: every
// byte of the expected key is compared whatever the given length or content, and the result
// is accumulated without an early exit.
bool constant_time_equals(std::string_view given, std::string_view expected);

class BearerAuth {
 public:
  enum class Verdict { Allowed, MissingCredentials, WrongCredentials };

  // An empty key turns authentication off (every request is allowed). Otherwise the key must
  // be 1..1024 printable ASCII characters without spaces (an InputError says why not).
  explicit BearerAuth(std::string api_key = {});

  bool enabled() const { return !api_key_.empty(); }
  // Checks the value of a request's Authorization header ("" when it has none).
  Verdict check(std::string_view authorization_header) const;

 private:
  std::string api_key_;
};

}  // namespace lcmd::serve
