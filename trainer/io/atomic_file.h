// Writes that never leave a half-written file or folder in place of a good one.
#pragma once
#include <filesystem>
#include <functional>
#include <span>
#include <string_view>

namespace lora {

// Writes bytes to `path` through a temp file in the same folder, fsyncs it, renames it over
// `path`, and fsyncs the folder.
void write_file_atomic(const std::filesystem::path& path, std::span<const std::byte> bytes);
void write_file_atomic(const std::filesystem::path& path, std::string_view text);

// Builds a folder: `fill` writes into a fresh temp folder beside `dir`; on success the temp folder
// replaces `dir` (the old one, if any, is removed only after the new one is in place). On any
// exception the temp folder is removed and `dir` is untouched.
void write_dir_atomic(const std::filesystem::path& dir,
                      const std::function<void(const std::filesystem::path& tmp)>& fill);

// Removes a folder so that no reader ever sees part of it: it is first renamed aside to a hidden
// ".<name>.old-*" beside it (what a run killed meanwhile leaves there is hidden and swept by the
// next one), then deleted. Errors are ignored, as for a folder already gone.
void remove_dir_atomic(const std::filesystem::path& dir);

// fsync a file or folder by path.
void fsync_path(const std::filesystem::path& path);

}  // namespace lora
