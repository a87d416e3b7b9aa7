// The `lcmd` command line: generate, tokenize, info, pack, make-random-model, ...
// Every failure is one line on stderr and exit code 2; no output file is left behind.
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cli/bench.h"
#include "cli/flags.h"
#include "cli/pull_command.h"
#include "cli/serve_commands.h"
#include "core/cpu.h"
#include "core/error.h"
#include "core/file_util.h"
#include "image/base64.h"
#include "io/model_folder.h"
#include "lcmd/engine.h"
#include "ops/ops.h"
#include "pipeline/pack.h"
#include "pipeline/random_model.h"
#include "text/tokenizer.h"

namespace lcmd {
namespace {

constexpr const char* kUsage = R"(usage: lcmd <command> [flags]

commands:
  generate  --model DIR|FILE.safetensors|FILE.lcmd --prompt TEXT [--negative-prompt TEXT] [--width 256] [--height 256]
            [--steps 4] [--guidance 8.0] [--seed N] [--threads N] [--precision auto|fp32]
            [--lora FILE[:SCALE]]... [--tokenizer DIR] [--config-dir DIR] [--decoder vae|taesd --taesd DIR]
            [--output out.png | --base64] [--verbose]
            Writes a PNG (default out.png) or prints it base64-encoded on stdout.
            --model: a diffusers folder or a single-file LDM checkpoint (.safetensors; pickles
            such as .ckpt are refused). --lora (repeatable) merges a LoRA at load, scale 1 by
            default. A UNet without LCM's guidance embedding runs classifier-free guidance with
            the negative prompt when --guidance > 1. Single files: --tokenizer DIR (CLIP vocab.json,
            merges.txt) and --config-dir DIR (a diffusers folder whose configs replace the SD1.5
            defaults; widths always come from the file).
  tokenize  --model DIR|FILE --prompt TEXT [--tokenizer DIR]   Prints the 77 CLIP input ids as JSON.
  info      --model DIR|FILE [--lora FILE[:SCALE]]... [--tokenizer DIR] [--config-dir DIR] [--verify]
            Component configs, parameter counts, dtypes. --verify re-reads a packed model's data
            and checks its sha256.
  pack      --model DIR|FILE --out FILE.lcmd [--dtype auto|fp32|fp16|bf16] [--lora FILE[:SCALE]]...
            [--tokenizer DIR] [--config-dir DIR]
            One file with every weight in its compute dtype, the configs and the tokenizer, loaded
            with an mmap: pass it as --model to generate, serve, lambda, info. LoRAs are merged in.
            --dtype auto: bf16 weights, as the default precision computes on them.
  make-random-model --like DIR --out DIR [--dtype fp32|fp16] [--tokenizer DIR] [--seed N]
            A model folder with DIR's configs and random weights (PyTorch default init).
  bench     [--model DIR | --random [--like ../shared/sd15] [--tokenizer DIR]] [--sizes 256,512]
            [--steps 4] [--precision auto] [--repeat 5] [--warmup 1] [--threads N] [--json]
            Per-stage medians, GFLOP/s, peak RSS and model ready time.
            bench --cold --model DIR|FILE [--repeat 3]: new processes, process start -> model ready
            and -> first image, with the model's files in the page cache and evicted from it.
  serve     --model DIR|FILE [--host 127.0.0.1] [--port 8080] [--max-queue 8] [--max-body-bytes 65536]
            [--max-size 768] [--max-steps 8] [--result-cache 0] [--result-cache-mb 256] [--threads N]
            [--precision P] [--text-cache 64] [--read-timeout 10] [--connection-threads 8]
            [--lora FILE[:SCALE]]... [--tokenizer DIR] [--config-dir DIR] [--taesd DIR] [--decoder vae|taesd]
            [--api-key KEY] [--log-prompts]
            HTTP server: POST /v1/generate, POST /v1/images/generations (OpenAI), GET /healthz,
            GET /metrics. --port 0 picks a free port. SIGTERM finishes the running request.
            --api-key (or LCMD_API_KEY): every route but /healthz needs "Authorization: Bearer KEY".
            Prompts are logged only with --log-prompts.
  lambda    [--model DIR|FILE] [--runtime-api HOST:PORT] [--threads N] [--max-size 768] [--max-steps 8]
            [--lora FILE[:SCALE]]... [--log-prompts] ...
            AWS Lambda custom runtime (Runtime API 2018-06-01). Settings default to the environment:
            AWS_LAMBDA_RUNTIME_API, LCMD_MODEL (/opt/sd_model), LCMD_THREADS, LCMD_MAX_SIZE, LCMD_LORA
            (FILE[:SCALE],...), LCMD_LOG_PROMPTS, ...
            With no arguments and AWS_LAMBDA_RUNTIME_API set, lcmd runs as the Lambda runtime.
  pull      [REPO] [--revision main] [--variant fp16] [--dir DIR]
            Downloads the files the engine reads of a diffusers model (default
            SimianLuo/LCM_Dreamshaper_v7) from the HuggingFace hub into DIR (default: the repo's name),
            checked against the hub's sha256. HF_TOKEN and HF_ENDPOINT are honoured. An interrupted
            download is kept as FILE.incomplete and a re-run resumes it; files already present are kept.
)";

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;
}

EngineOptions model_options(const Flags& f, std::vector<LoraSpec> loras) {
  EngineOptions options;
  options.loras = std::move(loras);
  options.tokenizer_dir = f.str("tokenizer");
  options.config_dir = f.str("config-dir");
  for (const std::string flag : {"tokenizer", "config-dir"})
    if (f.has(flag) && !std::filesystem::is_directory(f.str(flag)))
      throw InputError("--" + flag + " " + f.str(flag) + ": no such directory");
  return options;
}

int cmd_generate(int argc, char** argv) {
  std::vector<LoraSpec> loras = take_loras(argc, argv);
  const Flags f(argc, argv,
                {"model", "prompt", "negative-prompt", "width", "height", "steps", "guidance", "seed", "threads", "output",
                 "precision", "tokenizer", "config-dir", "decoder", "taesd"},
                {"base64", "verbose"});
  GenerateRequest req;
  const std::string model = f.required("model");
  req.prompt = f.required("prompt");
  req.negative_prompt = f.str("negative-prompt");
  const std::string decoder = f.str("decoder", "vae");
  if (decoder != "vae" && decoder != "taesd") throw InputError("--decoder must be vae or taesd, got '" + decoder + "'");
  if (decoder == "taesd" && !f.has("taesd")) throw InputError("--decoder taesd needs --taesd DIR (an AutoencoderTiny folder)");
  if (f.has("taesd") && !std::filesystem::is_directory(f.str("taesd")))
    throw InputError("--taesd " + f.str("taesd") + ": no such directory");
  req.width = static_cast<int>(f.integer("width", 256, INT32_MIN, INT32_MAX));
  req.height = static_cast<int>(f.integer("height", 256, INT32_MIN, INT32_MAX));
  req.steps = static_cast<int>(f.integer("steps", 4, INT32_MIN, INT32_MAX));
  req.guidance_scale = f.number("guidance", 8.0);
  if (f.has("seed")) req.seed = f.unsigned64("seed");
  if (f.has("output") && f.has("base64")) throw InputError("--output and --base64 exclude each other");
  const std::string output = f.str("output", "out.png");
  EngineOptions options = model_options(f, std::move(loras));
  options.taesd_dir = f.str("taesd");
  options.default_decoder = decoder;
  options.threads = static_cast<int>(f.integer("threads", 0, 0, 1024));
  options.precision = f.str("precision", "auto");
  validate(req);  // before the (slow) model load
  // Prompt validity (UTF-8) is checked by the tokenizer inside generate, before any output.

  const bool verbose = f.has("verbose");
  const bool progress_line = isatty(STDERR_FILENO);
  const auto load_start = std::chrono::steady_clock::now();
  const auto engine = Engine::load(model, options);
  const auto ready = std::chrono::steady_clock::now();
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
    const ops::StoredWeightsUse stored = ops::stored_weights_use();
    if (stored.in_place + stored.relaid_out > 0)
      std::fprintf(stderr, "packed layers %d used in place, %d re-laid out (packed for another CPU or precision)\n",
                   stored.in_place, stored.relaid_out);
    std::fprintf(stderr, "model load    %8.1f ms\n", std::chrono::duration<double, std::milli>(ready - load_start).count());
    if (const char* t0 = std::getenv("LCMD_T0_NS"))  // set by `lcmd bench --cold`: the parent's clock before exec
      std::fprintf(stderr, "ready after start %8.1f ms\n",
                   (std::chrono::duration<double, std::nano>(ready.time_since_epoch()).count() - std::atof(t0)) / 1e6);
    std::fprintf(stderr, "tokenize      %8.1f ms\ntext encoder  %8.1f ms\n", t.tokenize_ms, t.text_encoder_ms);
    for (size_t i = 0; i < t.unet_step_ms.size(); ++i) std::fprintf(stderr, "unet step %zu   %8.1f ms\n", i + 1, t.unet_step_ms[i]);
    std::fprintf(stderr, "vae decode    %8.1f ms\npng           %8.1f ms\ntotal         %8.1f ms\npeak RSS      %8.1f MB\n",
                 t.vae_decode_ms, t.png_ms, t.total_ms, peak_rss_mb());
  }
  return 0;
}

int cmd_tokenize(int argc, char** argv) {
  const Flags f(argc, argv, {"model", "prompt", "tokenizer", "config-dir"}, {});
  const std::filesystem::path model = f.required("model");
  const std::string prompt = f.required("prompt");
  const ClipTokenizer tokenizer = load_model_tokenizer(model, f.str("tokenizer"), f.str("config-dir"));
  const std::vector<int32_t> ids = tokenizer.encode(prompt);
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  std::cout << out << "]\n";
  return 0;
}

int cmd_info(int argc, char** argv) {
  std::vector<LoraSpec> loras = take_loras(argc, argv);
  const Flags f(argc, argv, {"model", "tokenizer", "config-dir"}, {"verify"});
  std::cout << describe_model(f.required("model"), model_options(f, std::move(loras)));
  if (f.has("verify")) {
    verify_model(f.required("model"));
    std::cout << "verified: the data matches its sha256\n";
  }
  return 0;
}

int cmd_pack(int argc, char** argv) {
  std::vector<LoraSpec> loras = take_loras(argc, argv);
  const Flags f(argc, argv, {"model", "out", "dtype", "tokenizer", "config-dir"}, {});
  const EngineOptions model = model_options(f, std::move(loras));
  PackOptions options;
  options.loras = model.loras;
  options.tokenizer_dir = model.tokenizer_dir;
  options.config_dir = model.config_dir;
  options.dtype = f.str("dtype", "auto");
  const std::string out = f.required("out");
  const PackSummary summary = pack_model(f.required("model"), out, options);
  std::fprintf(stderr, "wrote %s (%zu tensors, %.1f MB)\n", out.c_str(), summary.tensors, summary.file_bytes / 1e6);
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
  if (cmd == "pack") return cmd_pack(argc, argv);
  if (cmd == "bench") return cmd_bench(argc, argv);
  if (cmd == "serve") return cmd_serve(argc, argv);
  if (cmd == "lambda") return cmd_lambda(argc, argv);
  if (cmd == "pull") return cmd_pull(argc, argv);
  throw InputError("unknown command '" + cmd +
                   "' (commands: generate, tokenize, info, pack, make-random-model, bench, serve, lambda, pull)");
}

}  // namespace
}  // namespace lcmd

int main(int argc, char** argv) {
  // Past a file size limit (ulimit -f) a write fails with EFBIG and is reported like a full disk,
  // instead of the default SIGXFSZ killing the process mid-write.
  std::signal(SIGXFSZ, SIG_IGN);
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
