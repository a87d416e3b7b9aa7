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
            [--seed N] [--threads N] [--precision fp32] [--output out.png | --base64] [--verbose]
            Writes a PNG (default out.png) or prints it base64-encoded on stdout.
  tokenize  --model DIR --prompt TEXT        Prints the 77 CLIP input ids as a JSON array.
  info      --model DIR                      Component configs, parameter counts, dtypes.
  make-random-model --like DIR --out DIR [--dtype fp32|fp16] [--tokenizer DIR] [--seed N]
            A model folder with DIR's configs and random weights (PyTorch default init).
)";

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
  options.precision = f.str("precision", "fp32");
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
  throw InputError("unknown command '" + cmd + "' (commands: generate, tokenize, info, make-random-model)");
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
