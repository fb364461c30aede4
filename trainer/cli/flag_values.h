// Values the commands' flags share: float dtypes, byte sizes, output folders, the quantization
// flags, the KV cache's type and the adapter multiplier.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/dtype.h"
#include "trainer/transformer.h"

namespace lora::cli {

// "f32" | "float32" | "f16" | "float16" | "bf16" | "bfloat16" (any case) -> the DType.
DType parse_float_dtype(std::string_view name);
// "5GB", "500MB", "64KiB", "1000" (bytes) -> bytes. Decimal units (GB = 1e9) and binary (GiB).
uint64_t parse_byte_size(std::string_view text);
// A folder named on the command line: "out/" names the folder "out" (write_dir_atomic builds the
// temp folder beside it from its file name).
std::filesystem::path folder_path(const std::string& text);

// The flag that sets a library setting: "learning_rate" -> "--learning-rate" (every command
// names its flags after the settings they set).
std::string flag_of_setting(const std::string& setting);
// An error as the CLI shows it: a SettingError as "--flag: problem", an AdvisedError with its
// changes spelled as flags ("--batch-size 2", "--grad-checkpoint"), anything else as it says.
std::string error_text(const std::exception& e);

// --quantize BITS and --q-group-size N, checked by the library's one check of a quantization
// (check_quantization) so that every command accepts and refuses the same values.
void add_quantize_flags(CLI::App& cmd, int& bits, int& group_size, const std::string& help);

// --kv-cache-type f32|f16: what generation's KV cache holds (KVCacheType; default f32).
void add_kv_cache_flag(CLI::App& cmd, KVCacheType& type);

// --decode-activations f32|int8: what decode steps' 4-bit products read (GemvActivations).
void add_decode_activations_flag(CLI::App& cmd, GemvActivations& activations);

// --max-shard-size SIZE: split written weights into shards above this size (parse_byte_size).
void add_max_shard_size_flag(CLI::App& cmd, std::string& size);

// --adapter-scale (hidden alias --strength): the multiplier on each --adapter-path's own scale,
// given once for all adapters or once per adapter.
CLI::Option* add_adapter_scale_flag(CLI::App& cmd, std::vector<double>& scales);
// The multiplier of each of `count` adapters (1 when none was given); refuses a count of
// --adapter-scale values that is neither 1 nor `count`.
std::vector<double> adapter_scales(const std::vector<double>& given, std::size_t count);

}  // namespace lora::cli
