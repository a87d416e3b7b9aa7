// `lcmd serve` (the HTTP server) and `lcmd lambda` (the AWS Lambda custom runtime).
#pragma once

namespace lcmd {

// lcmd serve --model DIR [--host 127.0.0.1] [--port 8080] [...]: runs until SIGTERM/SIGINT,
// then finishes the running request, refuses new ones and returns 0.
int cmd_serve(int argc, char** argv);

// lcmd lambda [--model DIR] [...]: the Runtime API loop; the settings come from flags or the
// function's environment (AWS_LAMBDA_RUNTIME_API, LCMD_MODEL, ...). Returns non-zero after an
// init error or when the Runtime API fails.
int cmd_lambda(int argc, char** argv);

}  // namespace lcmd
