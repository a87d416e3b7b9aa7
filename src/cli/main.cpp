// The `lcmd` command line: generate, tokenize, info, make-random-model.
// Every failure is one line on stderr and exit code 2; no output file is left behind.
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cli/bench.h"
#include "cli/flags.h"
#include "cli/serve_commands.h"
#include "core/cpu.h"
#include "core/error.h"
#include "core/file_util.h"
#include "image/base64.h"
#include "lcmd/engine.h"
#include "pipeline/random_model.h"
#include "text/tokenizer.h"

namespace lcmd {
namespace {

constexpr const char* kUsage = R"(usage: lcmd <command> [flags]

commands:
  generate  --model DIR --prompt TEXT [--width 256] [--height 256] [--steps 4] [--guidance 8.0]
            [--seed N] [--threads N] [--precision auto|fp32] [--output out.png | --base64] [--verbose]
            Writes a PNG (default out.png) or prints it base64-encoded on stdout.
  tokenize  --model DIR --prompt TEXT        Prints the 77 CLIP input ids as a JSON array.
  info      --model DIR                      Component configs, parameter counts, dtypes.
  make-random-model --like DIR --out DIR [--dtype fp32|fp16] [--tokenizer DIR] [--seed N]
            A model folder with DIR's configs and random weights (PyTorch default init).
  bench     [--model DIR | --random [--like ../shared/sd15] [--tokenizer DIR]] [--sizes 256,512]
            [--steps 4] [--precision auto] [--repeat 5] [--warmup 1] [--threads N] [--json]
            Per-stage medians, GFLOP/s, peak RSS and model ready time.
  serve     --model DIR [--host 127.0.0.1] [--port 8080] [--max-queue 8] [--max-body-bytes 65536]
            [--max-size 768] [--max-steps 8] [--result-cache 0] [--result-cache-mb 256] [--threads N]
            [--precision P] [--text-cache 64] [--read-timeout 10] [--connection-threads 8]
            HTTP server: POST /v1/generate, POST /v1/images/generations (OpenAI), GET /healthz,
            GET /metrics. --port 0 picks a free port. SIGTERM finishes the running request.
  lambda    [--model DIR] [--runtime-api HOST:PORT] [--threads N] [--max-size 768] [--max-steps 8] ...
            AWS Lambda custom runtime (Runtime API 2018-06-01). Settings default to the environment:
            AWS_LAMBDA_RUNTIME_API, LCMD_MODEL (/opt/sd_model), LCMD_THREADS, LCMD_MAX_SIZE, ...
            With no arguments and AWS_LAMBDA_RUNTIME_API set, lcmd runs as the Lambda runtime.
)";

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

int cmd_generate(int argc, char** argv) {
  const Flags f(argc, argv, {"model", "prompt", "width", "height", "steps", "guidance", "seed", "threads", "output", "precision"},
                {"base64", "verbose"});
  GenerateRequest req;
  const std::string model = f.required("model");
  req.prompt = f.required("prompt");
  req.width = static_cast<int>(f.integer("width", 256, INT32_MIN, INT32_MAX));
  req.height = static_cast<int>(f.integer("height", 256, INT32_MIN, INT32_MAX));
  req.steps = static_cast<int>(f.integer("steps", 4, INT32_MIN, INT32_MAX));
  req.guidance_scale = f.number("guidance", 8.0);
  if (f.has("seed")) req.seed = f.unsigned64("seed");
  if (f.has("output") && f.has("base64")) throw InputError("--output and --base64 exclude each other");
  const std::string output = f.str("output", "out.png");
  EngineOptions options;
  options.threads = static_cast<int>(f.integer("threads", 0, 0, 1024));
  options.precision = f.str("precision", "auto");
  validate(req);  // before the (slow) model load
  // Prompt validity (UTF-8) is checked by the tokenizer inside generate, before any output.

  const bool verbose = f.has("verbose");
  const bool progress_line = isatty(STDERR_FILENO);
  const auto engine = Engine::load(model, options);
  const GenerateResult r = engine->generate(req, [&](int step, int total) {
    if (progress_line) std::fprintf(stderr, "\rstep %d/%d%s", step, total, step == total ? "\n" : "");
    return true;
  });

  if (f.has("base64")) {
    std::cout << base64_encode(r.png) << "\n";
  } else {
    write_file_atomic(output, r.png.data(), r.png.size());
  }
  std::fprintf(stderr, "seed: %llu\n", static_cast<unsigned long long>(r.seed));
  if (!f.has("base64")) std::fprintf(stderr, "wrote %s (%dx%d)\n", output.c_str(), r.width, r.height);
  if (verbose) {
    const StageTimings& t = r.timings;
    std::fprintf(stderr, "precision     %s\nthreads       %d (%s)\n", engine->precision().c_str(), engine->threads(),
                 cpu_info().features().c_str());
    std::fprintf(stderr, "tokenize      %8.1f ms\ntext encoder  %8.1f ms\n", t.tokenize_ms, t.text_encoder_ms);
    for (size_t i = 0; i < t.unet_step_ms.size(); ++i) std::fprintf(stderr, "unet step %zu   %8.1f ms\n", i + 1, t.unet_step_ms[i]);
    std::fprintf(stderr, "vae decode    %8.1f ms\npng           %8.1f ms\ntotal         %8.1f ms\npeak RSS      %8.1f MB\n",
                 t.vae_decode_ms, t.png_ms, t.total_ms, peak_rss_mb());
  }
  return 0;
}

int cmd_tokenize(int argc, char** argv) {
  const Flags f(argc, argv, {"model", "prompt"}, {});
  const std::filesystem::path dir = f.required("model");
  const std::string prompt = f.required("prompt");
  const ClipTokenizer tokenizer = ClipTokenizer::from_dir(dir / "tokenizer");
  const std::vector<int32_t> ids = tokenizer.encode(prompt);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  std::cout << out << "]\n";
  return 0;
}

int cmd_info(int argc, char** argv) {
  const Flags f(argc, argv, {"model"}, {});
  std::cout << describe_model_folder(f.required("model"));
  return 0;
}

int cmd_make_random_model(int argc, char** argv) {
  const Flags f(argc, argv, {"like", "out", "dtype", "tokenizer", "seed"}, {});
  const std::string dtype = f.str("dtype", "fp32");
  if (dtype != "fp32" && dtype != "fp16") throw InputError("--dtype must be fp32 or fp16, got '" + dtype + "'");
  const uint64_t seed = f.has("seed") ? f.unsigned64("seed") : 0;
  write_random_model(f.required("like"), f.str("tokenizer"), f.required("out"), dtype == "fp16" ? DType::F16 : DType::F32,
                     seed);
  std::fprintf(stderr, "wrote %s\n", f.required("out").c_str());
  return 0;
}

int run(int argc, char** argv) {
  if (argc < 2 && std::getenv("AWS_LAMBDA_RUNTIME_API")) return cmd_lambda(argc, argv);  // the Lambda bootstrap
  if (argc < 2) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (cmd == "generate") return cmd_generate(argc, argv);
  if (cmd == "tokenize") return cmd_tokenize(argc, argv);
  if (cmd == "info") return cmd_info(argc, argv);
  if (cmd == "make-random-model") return cmd_make_random_model(argc, argv);
  if (cmd == "bench") return cmd_bench(argc, argv);
  if (cmd == "serve") return cmd_serve(argc, argv);
  if (cmd == "lambda") return cmd_lambda(argc, argv);
  throw InputError("unknown command '" + cmd +
                   "' (commands: generate, tokenize, info, make-random-model, bench, serve, lambda)");
}

}  // namespace
}  // namespace lcmd

int main(int argc, char** argv) {
  auto fail = [](const std::exception& e, int code) {
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n') c = ' ';
    std::fprintf(stderr, "lcmd: error: %s\n", msg.c_str());
    return code;
  };
  try {
    return lcmd::run(argc, argv);
  } catch (const lcmd::InputError& e) {
    return fail(e, 2);  // bad flags or values
  } catch (const lcmd::ModelError& e) {
    return fail(e, 2);  // missing or corrupt model
  } catch (const std::exception& e) {
    return fail(e, 1);  // a fault of the engine or the system
  }
}
