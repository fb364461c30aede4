#include "trainer/cli/flag_values.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "trainer/cli/flag_alias.h"
#include "trainer/model.h"
#include "trainer/setting_error.h"
#include "trainer/trained_block.h"

namespace lora::cli {

namespace fs = std::filesystem;

DType parse_float_dtype(std::string_view name) {
  std::string n(name);
  std::transform(n.begin(), n.end(), n.begin(), [](unsigned char c) { return std::tolower(c); });
  if (n == "f32" || n == "float32") return DType::F32;
  if (n == "f16" || n == "float16") return DType::F16;
  if (n == "bf16" || n == "bfloat16") return DType::BF16;
  throw std::runtime_error("unknown float dtype \"" + std::string(name) +
                           "\" (expected f32, f16 or bf16)");
}

uint64_t parse_byte_size(std::string_view text) {
  std::size_t digits = 0;
  while (digits < text.size() &&
         (std::isdigit(static_cast<unsigned char>(text[digits])) || text[digits] == '.'))
    ++digits;
  std::string unit(text.substr(digits));
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return std::toupper(c); });
  static const std::map<std::string, double> kUnits = {
      {"", 1},      {"B", 1},        {"KB", 1e3},        {"MB", 1e6},          {"GB", 1e9},
      {"TB", 1e12}, {"KIB", 1024.0}, {"MIB", 1048576.0}, {"GIB", 1073741824.0}};
  double value = 0;
  try {
    std::size_t used = 0;
    value = digits ? std::stod(std::string(text.substr(0, digits)), &used) : -1;
    if (used != digits) value = -1;
  } catch (const std::exception&) {
    value = -1;
  }
  const auto u = kUnits.find(unit);
  if (value <= 0 || u == kUnits.end())
    throw std::runtime_error("not a size: \"" + std::string(text) + "\" (e.g. 5GB, 500MB, 2GiB)");
  return static_cast<uint64_t>(value * u->second);
}

fs::path folder_path(const std::string& text) {
  fs::path p(text);
  while (!p.has_filename() && p.has_parent_path() && p != p.root_path()) p = p.parent_path();
  return p;
}

std::string flag_of_setting(const std::string& setting) {
  std::string flag = setting;
  std::replace(flag.begin(), flag.end(), '_', '-');
  return "--" + flag;
}

std::string error_text(const std::exception& e) {
  if (const auto* f = dynamic_cast<const FloatBaseRequired*>(&e))
    return flag_of_setting(f->setting()) + ": " + f->problem() +
           " (`lora convert --model MODEL --dtype f32 --out FLOAT_MODEL` writes a float copy; "
           "--fine-tune-type lora trains on the quantized base)";
  if (const auto* s = dynamic_cast<const SettingError*>(&e))
    return flag_of_setting(s->setting()) + ": " + s->problem();
  if (const auto* a = dynamic_cast<const AdvisedError*>(&e))
    return a->message([](const SettingChange& c) {
      return flag_of_setting(c.setting) + (c.value.empty() ? "" : " " + c.value);
    });
  return e.what();
}

namespace {

// A CLI11 check that runs the library's check_quantization on one of its two values (the other
// at a value it accepts), so the flag is refused with the library's reason.
CLI::Validator quantization_check(bool is_bits) {
  return CLI::Validator(
      [is_bits](const std::string& text) {
        int value = 0;
        if (!CLI::detail::lexical_cast(text, value)) return "not an integer: " + text;
        if (is_bits && value == 0) return std::string();  // 0: as stored
        try {
          check_quantization(is_bits ? value : 4, is_bits ? 64 : value);
        } catch (const SettingError& e) {
          return e.problem();
        }
        return std::string();
      },
      is_bits ? "BITS" : "N");
}

}  // namespace

void add_quantize_flags(CLI::App& cmd, int& bits, int& group_size, const std::string& help) {
  cmd.add_option("--quantize", bits, help)->check(quantization_check(true));
  cmd.add_option("--q-group-size", group_size, "Quantization group size: 32, 64 or 128")
      ->check(quantization_check(false))
      ->capture_default_str();
}

void add_kv_cache_flag(CLI::App& cmd, KVCacheType& type) {
  cmd.add_option_function<std::string>(
         "--kv-cache-type",
         [&type](const std::string& name) {
           type = name == "f16" ? KVCacheType::F16 : KVCacheType::F32;
         },
         "What the KV cache holds: f32 (the keys and values as computed; default) or f16 "
         "(rounded to halves: half the memory, and half of what a long context's steps read)")
      ->check(CLI::IsMember({"f32", "f16"}, CLI::ignore_case));
}

void add_decode_activations_flag(CLI::App& cmd, GemvActivations& activations) {
  cmd.add_option_function<std::string>(
         "--decode-activations",
         [&activations](const std::string& name) { activations = gemv_activations_named(name); },
         "What a decode step's products with quantized weights read: int8 (default: the "
         "activations rounded to 8 bits per group (32 values, or an MLX model's group), as "
         "llama.cpp does; integer "
         "multiply-adds, 1.4-2.2x faster steps on AVX2; MLX 4-bit weights, and GGUF blocks from "
         "Q4_0 to Q8_0, Q2_K to Q6_K, IQ1 to IQ4, TQ1_0, TQ2_0 and MXFP4, on AVX2 or AVX-512 "
         "CPUs) or "
         "f32 (the activations as computed: each product the exact one of the dequantized "
         "weights, as mlx-lm computes it; greedy text may part from int8's after a while). "
         "Float weights always read f32")
      ->check(CLI::IsMember({"f32", "int8"}, CLI::ignore_case));
}

void add_max_shard_size_flag(CLI::App& cmd, std::string& size) {
  cmd.add_option("--max-shard-size", size,
                 "Split the weights into shards above this size (default 5GB)");
}

CLI::Option* add_adapter_scale_flag(CLI::App& cmd, std::vector<double>& scales) {
  CLI::Option* opt =
      cmd.add_option("--adapter-scale", scales,
                     "Multiplier on each adapter's own scale: once for all adapters, or once per "
                     "--adapter-path (default 1; 0 is the base alone)");
  add_hidden_alias(cmd, "--strength", "--adapter-scale");
  return opt;
}

std::vector<double> adapter_scales(const std::vector<double>& given, std::size_t count) {
  if (given.size() > 1 && given.size() != count)
    throw std::runtime_error("give --adapter-scale once, or once per --adapter-path (" +
                             std::to_string(count) + " adapters, " + std::to_string(given.size()) +
                             " scales)");
  if (given.size() == count) return given;
  return std::vector<double>(count, given.empty() ? 1.0 : given.front());
}

}  // namespace lora::cli
