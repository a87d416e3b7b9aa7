// `lcmd pull [REPO] [--revision REV] [--variant fp16] [--dir DIR]`: a model folder from the hub.
#pragma once

namespace lcmd {

int cmd_pull(int argc, char** argv);

}  // namespace lcmd
