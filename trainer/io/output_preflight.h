// Checks on an output folder made before any work is spent: that it can be written at all, and
// that its file system has room for what will be written (so a long run does not fail at its
// first checkpoint, or its last write).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>

namespace lora {

// Throws, naming the folder and the reason, when `dir` cannot be created or written: a file
// where a folder is needed, a read-only mount, no permission. Nothing is left behind: when `dir`
// does not exist yet, the nearest existing folder above it is probed instead (a file is created
// there and removed).
void check_folder_writable(const std::filesystem::path& dir);

// Bytes free to an unprivileged writer on the file system that holds `dir` (or the nearest
// existing folder above it).
uint64_t free_bytes_at(const std::filesystem::path& dir);

// Throws, naming the folder and both sizes, when fewer than `needed` bytes are free there.
// `available` replaces the measured figure (tests).
void check_free_space(const std::filesystem::path& dir, uint64_t needed,
                      std::optional<uint64_t> available = std::nullopt);

// The most a training run keeps on disk at once: the adapter, `checkpoints_kept` checkpoints
// plus the one being written, and the metrics log and loss curve. Checkpoints hold the adapter
// and, per trainable value, `optimizer_slots` f32 moments besides the value itself.
uint64_t training_output_bytes(int64_t lora_parameters, int64_t optimizer_slots,
                               int64_t checkpoints_kept, int64_t steps);

}  // namespace lora
