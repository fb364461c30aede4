// `lora convert`: rewrites a model folder's storage. Quantizes a float model to MLX affine
// (--quantize 4 --q-group-size 64: the layout MLX-LM loads and loracpp uses as it is), or writes
// every weight as f32/f16/bf16 (--dtype; a quantized model is dequantized). Adapters are
// converted between formats by `lora export`.
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/gguf_convert.h"
#include "trainer/model_convert.h"

namespace lora::cli {

namespace {

struct ConvertCliOptions {
  std::string model;
  std::string out;
  int bits = 0;
  int group_size = 64;
  std::string dtype;
  bool keep_embedding_float = false;
  std::string max_shard_size = "5GB";
  std::string q_type;  // GGUF output only
};

void run_convert_gguf(const ConvertCliOptions& o, const GlobalOptions& global) {
  if (o.bits != 0 || !o.dtype.empty() || o.keep_embedding_float)
    throw std::runtime_error(
        "--quantize, --dtype and --keep-embedding-float apply to a folder --out; a .gguf --out "
        "takes --q-type");
  const std::string name = o.q_type.empty() ? "f16" : o.q_type;
  const auto plan = GgufTypePlan::parse(name);
  if (const auto t = ggml_type_named(name); t && !ggml_type_writable(*t))
    throw std::runtime_error("--q-type: " + std::string(ggml_type_name(*t)) +
                             " is read but not written (no encoder for it is built); q2_k, q3_k or "
                             "iq4_xs are the nearest");
  if (!plan)
    throw std::runtime_error(
        "--q-type: unknown type '" + name +
        "' (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, "
        "q5_k, q6_k, iq4_nl, iq4_xs, q4_k_m, q5_k_m, q4_k_s, q3_k_s, q3_k_m, q3_k_l)");
  const GgufConvertReport r = convert_to_gguf(o.model, o.out, *plan);
  if (global.json) {
    std::printf("%s\n",
                nlohmann::json{{"written", o.out}, {"tensors", r.to_json()}}.dump().c_str());
    return;
  }
  if (!global.quiet) {
    std::string counts;
    for (const auto& [type, n] : r.tensors_by_type)
      counts += (counts.empty() ? "" : ", ") + std::to_string(n) + " " + type;
    std::printf("%s: %s\n", plan->name().c_str(), counts.c_str());
  }
  std::printf("wrote %s\n", o.out.c_str());
}

void run_convert(const ConvertCliOptions& o, const GlobalOptions& global) {
  if (o.out.ends_with(".gguf")) return run_convert_gguf(o, global);
  if (!o.q_type.empty()) throw std::runtime_error("--q-type applies to a .gguf --out only");
  ConvertOptions options;
  options.quantize_bits = o.bits;
  options.group_size = o.group_size;
  options.quantize_embedding = !o.keep_embedding_float;
  if (!o.dtype.empty()) options.dtype = parse_float_dtype(o.dtype);
  options.max_shard_bytes = parse_byte_size(o.max_shard_size);
  const std::filesystem::path out = folder_path(o.out);
  const ConvertReport r = convert_model(o.model, out, options);
  if (global.json) {
    const nlohmann::json j = {{"written", out.string()},
                              {"quantized", r.quantized},
                              {"dequantized", r.dequantized},
                              {"kept_float", r.kept_float},
                              {"copied", r.copied}};
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  if (!global.quiet)
    std::printf(
        "quantized %lld linears, kept %lld float (input size not a multiple of the group), "
        "dequantized %lld, copied %lld other tensors\n",
        static_cast<long long>(r.quantized), static_cast<long long>(r.kept_float),
        static_cast<long long>(r.dequantized), static_cast<long long>(r.copied));
  std::printf("wrote %s\n", out.string().c_str());
}

}  // namespace

void add_convert(CLI::App& app, const GlobalOptions& global) {
  auto opts = std::make_shared<ConvertCliOptions>();
  auto* cmd = app.add_subcommand(
      "convert",
      "Convert a model folder: quantize to MLX 2-8 bit (--quantize) or write f32/f16/bf16 "
      "weights (--dtype), or write FILE.gguf for llama.cpp (--q-type). Adapters are converted by "
      "`lora export`.");
  cmd->add_option("--model", opts->model,
                  "Model folder (config.json + safetensors), or a GGUF file with --out FILE.gguf")
      ->required();
  cmd->add_option("--out", opts->out, "Output model folder, or FILE.gguf")->required();
  cmd->add_option(
      "--q-type", opts->q_type,
      "GGUF output: f32, f16 (default), bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, "
      "q4_k, q5_k, q6_k, iq4_nl, iq4_xs, or the llama-quantize mixes q4_k_m, q5_k_m, q4_k_s, "
      "q3_k_s, "
      "q3_k_m, q3_k_l");
  add_quantize_flags(*cmd, opts->bits, opts->group_size,
                     "Quantize the linears to this many bits: 2, 3, 4, 5, 6 or 8");
  cmd->add_option("--dtype", opts->dtype,
                  "Float type of the weights (f32, f16, bf16); dequantizes a quantized model");
  cmd->add_flag("--keep-embedding-float", opts->keep_embedding_float,
                "Do not quantize embed_tokens / lm_head");
  add_max_shard_size_flag(*cmd, opts->max_shard_size);
  cmd->callback([opts, &global] { run_convert(*opts, global); });
}

}  // namespace lora::cli
