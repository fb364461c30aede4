#include "autograd/parallel.h"

#include <omp.h>

namespace lora {

bool team_splits(bool worth_it) {
  return worth_it && omp_get_max_threads() > 1 && !omp_in_parallel();
}

}  // namespace lora
