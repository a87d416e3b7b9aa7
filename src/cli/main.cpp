#include <cstdio>

int main(int argc, char** argv) {
  std::fprintf(stderr, "usage: lcmd <generate|tokenize|info|make-random-model> ...\n");
  return 2;
}
