#pragma once

namespace lcmd {

// lcmd bench [--model DIR | --random [--like DIR] [--tokenizer DIR]] [--sizes 256,512] [--steps 4]
//            [--precision P] [--repeat 5] [--warmup 1] [--threads N] [--guidance 8] [--json]
//            [--decoder vae|taesd [--taesd DIR]]   (--random with taesd: a random full-size TAESD)
//       lcmd bench --cold --model DIR|FILE [--precision P] [--repeat 3] [--json]   (cold_bench.h)
int cmd_bench(int argc, char** argv);

}  // namespace lcmd
