#include "cli/pull_command.h"

#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "cli/flags.h"
#include "hub/pull.h"
#include "io/model_folder.h"

namespace lcmd {

namespace {

// Flags takes only --flags; REPO is the one positional argument and may come anywhere.
std::string take_repo(int argc, char** argv, std::vector<char*>& rest) {
  std::string repo;
  rest = {argv[0], argv[1]};
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    const bool is_value = i > 2 && std::string(argv[i - 1]).rfind("--", 0) == 0 &&
                          std::string(argv[i - 1]).find('=') == std::string::npos;
    if (a.rfind("--", 0) != 0 && !is_value) {
      if (!repo.empty()) throw InputError("unexpected argument '" + a + "' (one repository, already got '" + repo + "')");
      repo = a;
      continue;
    }
    rest.push_back(argv[i]);
  }
  return repo;
}

void report_file(const hub::PulledFile& f) {
  const double mb = f.bytes / 1e6;
  if (f.already_present) {
    std::fprintf(stderr, "  %-46s %9.1f MB  already present\n", f.path.c_str(), mb);
  } else {
    const std::string resumed = f.resumed_from ? ", resumed at " + std::to_string(f.resumed_from / 1000000) + " MB" : "";
    std::fprintf(stderr, "  %-46s %9.1f MB  %s%s%s\n", f.path.c_str(), mb,
                 f.verified == "none" ? "no checksum from the hub" : f.verified.c_str(),
                 f.verified == "none" ? "" : " ok", resumed.c_str());
  }
}

}  // namespace

int cmd_pull(int argc, char** argv) {
  std::vector<char*> rest;
  const std::string repo = take_repo(argc, argv, rest);
  const Flags f(static_cast<int>(rest.size()), rest.data(), {"revision", "variant", "dir"}, {});
  hub::PullOptions options;
  if (!repo.empty()) options.repo = repo;
  options.revision = f.str("revision", "main");
  options.variant = f.str("variant");
  options.dir = f.str("dir");
  options.progress = isatty(STDERR_FILENO);
  hub::apply_environment(options);
  hub::validate(options);

  const std::filesystem::path dir = hub::target_dir(options);
  std::fprintf(stderr, "pulling %s@%s from %s into %s\n", options.repo.c_str(), options.revision.c_str(),
               options.endpoint.c_str(), dir.c_str());
  uint64_t total = 0;
  for (const hub::PulledFile& file : hub::pull_model(options, report_file)) total += file.bytes;
  ModelFolder::locate(dir);  // the folder now has everything the engine reads
  std::fprintf(stderr, "done: %s (%.1f MB); try: lcmd generate --model %s --prompt \"a photo of a cat\"\n", dir.c_str(),
               total / 1e6, dir.c_str());
  return 0;
}

}  // namespace lcmd
