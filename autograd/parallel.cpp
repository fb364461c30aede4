#include "autograd/parallel.h"

#include <omp.h>

namespace lora {

bool team_splits(bool worth_it) {
  if (!worth_it || running_spin_team_job()) return false;
  if (const SpinTeam* team = current_spin_team()) return team->size() > 1;
  return omp_get_max_threads() > 1 && !omp_in_parallel();
}

int team_size() {
  const SpinTeam* team = current_spin_team();
  return team ? team->size() : omp_get_max_threads();
}

std::unique_ptr<SpinTeam> make_spin_team() {
  const int threads = team_size();
  if (threads < 2 || threads > omp_get_num_procs()) return nullptr;
  return std::make_unique<SpinTeam>(threads);
}

}  // namespace lora
