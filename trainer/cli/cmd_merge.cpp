// `lora merge`: folds adapters into the base and writes a complete model folder, with a report of
// how much of each delta the stored weights keep.
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/merge.h"

namespace lora::cli {

namespace {

struct MergeCliOptions {
  std::string model;
  std::vector<std::string> adapters;
  std::vector<double> adapter_scales;
  std::string out;
  bool dequantize = false;
  std::string dtype;
  std::string base_float;
  double min_delta_kept = 0.9;
  std::string max_shard_size = "5GB";
};

void run_merge(const MergeCliOptions& o, const GlobalOptions& global) {
  const std::vector<double> scales = adapter_scales(o.adapter_scales, o.adapters.size());
  std::vector<MergeAdapter> adapters;
  for (std::size_t i = 0; i < o.adapters.size(); ++i) {
    MergeAdapter m{AdapterFile::read(o.adapters[i]), scales[i]};
    for (const auto& name : m.adapter.unknown_tensors)
      std::fprintf(stderr, "warning: %s: tensor %s is not a LoRA pair of a block linear; ignored\n",
                   m.adapter.source.string().c_str(), name.c_str());
    adapters.push_back(std::move(m));
  }
  MergeOptions options;
  options.dequantize = o.dequantize;
  if (!o.dtype.empty()) options.float_dtype = parse_float_dtype(o.dtype);
  if (!o.base_float.empty()) options.base_float = o.base_float;
  options.min_delta_kept = o.min_delta_kept;
  options.max_shard_bytes = parse_byte_size(o.max_shard_size);
  const std::filesystem::path out = folder_path(o.out);

  const MergeReport report = merge_adapters(o.model, adapters, out, options);
  for (const auto& w : report.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  if (global.json) {
    nlohmann::json j = report.to_json();
    j["written"] = out.string();
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  if (!global.quiet) std::printf("%s", report.to_text().c_str());
  std::printf("wrote %s\n", out.string().c_str());
}

}  // namespace

void add_merge(CLI::App& app, const GlobalOptions& global) {
  auto opts = std::make_shared<MergeCliOptions>();
  auto* cmd = app.add_subcommand(
      "merge", "Fold adapters into the base (W + adapter-scale * scale * B A) and write the model");
  cmd->add_option("--model", opts->model, "Base model folder")->required();
  cmd->add_option("--adapter-path", opts->adapters,
                  "Adapter folder or .safetensors file (MLX-LM or PEFT); repeat to stack")
      ->required();
  add_adapter_scale_flag(*cmd, opts->adapter_scales);
  cmd->add_option("--out", opts->out, "Output model folder")->required();
  cmd->add_flag("--dequantize", opts->dequantize,
                "Quantized base: write float weights instead of requantizing");
  cmd->add_option("--dtype", opts->dtype,
                  "Float type with --dequantize: f32, f16 or bf16 (default: the scales' type)");
  cmd->add_option("--base-float", opts->base_float,
                  "Quantized base: its original float model; merge into it and quantize once");
  cmd->add_option("--min-delta-kept", opts->min_delta_kept,
                  "Warn when a layer keeps less of its delta than this (default 0.9)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--max-shard-size", opts->max_shard_size,
                  "Split the weights into shards above this size (default 5GB)");
  cmd->callback([opts, &global] { run_merge(*opts, global); });
}

}  // namespace lora::cli
