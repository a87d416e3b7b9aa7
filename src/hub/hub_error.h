// The one error type of `lcmd pull`: a download that could not be completed (offline, HTTP 404/401,
// a checksum mismatch, a full disk). The message names the repository and the file.
#pragma once
#include "core/error.h"

namespace lcmd::hub {

// Derives from InputError so the CLI reports it like a bad flag: one line and exit code 2. Every cause
// is something the user acts on (the network, the repository name, HF_TOKEN, free disk space).
class PullError : public InputError {
 public:
  using InputError::InputError;
};

}  // namespace lcmd::hub
