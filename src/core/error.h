// Errors that reach the user. Every message names what is wrong (file, tensor, field, range).
#pragma once
#include <stdexcept>
#include <string>

namespace lcmd {

// Bad input from the user: a flag, a request field, a prompt. CLI exit code 2.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A model file or folder that cannot be used: missing, corrupt, wrong shape. CLI exit code 2.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace lcmd
