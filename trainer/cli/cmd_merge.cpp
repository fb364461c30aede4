// `lora merge`: folds adapters into the base and writes a complete model folder, with a report of
// how much of each delta the stored weights keep.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/io/full_adapter.h"
#include "trainer/merge.h"
#include "trainer/merge_gguf.h"

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
  std::string outtype;  // GGUF output only
};

// A GGUF base merged into a GGUF file, each tensor in its own type or --outtype.
void merge_gguf(const MergeCliOptions& o, std::span<const MergeAdapter> adapters,
                const GlobalOptions& global) {
  std::optional<GgmlType> outtype;
  if (!o.outtype.empty()) {
    outtype = ggml_type_named(o.outtype);
    if (!outtype) throw std::runtime_error("--outtype: unknown type '" + o.outtype + "'");
    if (!ggml_type_writable(*outtype))
      throw std::runtime_error("--outtype: " + std::string(ggml_type_name(*outtype)) +
                               " is read but not written; q2_k, q3_k or iq4_xs are the nearest");
  }
  const GgufMergeReport report = merge_into_gguf(o.model, adapters, o.out, outtype);
  if (global.json) {
    nlohmann::json j = report.to_json();
    j["written"] = o.out;
    std::printf("%s\n", j.dump().c_str());
    return;
  }
  const MergeFidelity& total = report.total;
  if (!global.quiet)
    std::printf("merged %lld tensors: %.1f%% of the change kept, norm ratio %.3f, max error %.3g\n",
                static_cast<long long>(report.merged_tensors), 100.0 * total.kept(),
                total.norm_ratio(), total.max_error);
  for (const auto& [change, count] : report.retyped)
    std::fprintf(stderr, "note: %lld tensors %s: the base's type is read but not written\n",
                 static_cast<long long>(count), change.c_str());
  if (total.kept() < o.min_delta_kept)
    std::fprintf(stderr, "warning: only %.1f%% of the change survived the requantization\n",
                 100.0 * total.kept());
  std::printf("wrote %s\n", o.out.c_str());
}

void print_report(const MergeReport& report, const std::filesystem::path& out,
                  const GlobalOptions& global) {
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

// A full fine-tuning's folder: its trained tensors replace the base's.
void merge_full(const MergeCliOptions& o, const GlobalOptions& global) {
  if (o.adapters.size() != 1)
    throw std::runtime_error("--adapter-path " + o.adapters.front() +
                             " is a full fine-tuning, which replaces the base's weights and "
                             "merges alone (one --adapter-path)");
  for (double s : o.adapter_scales)
    if (s != 1.0)
      throw std::runtime_error("--adapter-scale: a full fine-tuning has no scale other than 1");
  if (o.dequantize || !o.base_float.empty() || !o.dtype.empty() || !o.outtype.empty())
    throw std::runtime_error(
        "--dequantize, --dtype, --base-float and --outtype do not apply to a full fine-tuning "
        "(it merges into its float base, each tensor in the base's dtype)");
  MergeOptions options;
  options.min_delta_kept = o.min_delta_kept;
  options.max_shard_bytes = parse_byte_size(o.max_shard_size);
  const std::filesystem::path out = folder_path(o.out);
  const MergeReport report = merge_full_finetune(o.model, o.adapters.front(), out, options);
  print_report(report, out, global);
}

void run_merge(const MergeCliOptions& o, const GlobalOptions& global) {
  if (std::any_of(o.adapters.begin(), o.adapters.end(),
                  [](const std::string& a) { return is_full_adapter(a); }))
    return merge_full(o, global);
  const std::vector<double> scales = adapter_scales(o.adapter_scales, o.adapters.size());
  std::vector<MergeAdapter> adapters;
  for (std::size_t i = 0; i < o.adapters.size(); ++i) {
    MergeAdapter m{AdapterFile::read(o.adapters[i]), scales[i]};
    adapters.push_back(std::move(m));
  }
  if (o.out.size() > 5 && o.out.substr(o.out.size() - 5) == ".gguf")
    return merge_gguf(o, adapters, global);
  if (!o.outtype.empty()) throw std::runtime_error("--outtype applies to a .gguf --out only");
  MergeOptions options;
  options.dequantize = o.dequantize;
  if (!o.dtype.empty()) options.float_dtype = parse_float_dtype(o.dtype);
  if (!o.base_float.empty()) options.base_float = o.base_float;
  options.min_delta_kept = o.min_delta_kept;
  options.max_shard_bytes = parse_byte_size(o.max_shard_size);
  const std::filesystem::path out = folder_path(o.out);

  const MergeReport report = merge_adapters(o.model, adapters, out, options);
  print_report(report, out, global);
}

}  // namespace

void add_merge(CLI::App& app, const GlobalOptions& global) {
  auto opts = std::make_shared<MergeCliOptions>();
  auto* cmd = app.add_subcommand(
      "merge", "Fold adapters into the base (W + adapter-scale * scale * B A) and write the model");
  cmd->add_option("--model", opts->model, "Base model folder (or GGUF file, with --out FILE.gguf)")
      ->required();
  cmd->add_option(
      "--outtype", opts->outtype,
      "GGUF output: type of the merged weights (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, "
      "q4_k, q5_k, q6_k, iq4_nl, iq4_xs; "
      "default: each keeps its own)");
  cmd->add_option("--adapter-path", opts->adapters,
                  "Adapter folder or .safetensors file (MLX-LM or PEFT); repeat to stack")
      ->required();
  add_adapter_scale_flag(*cmd, opts->adapter_scales);
  cmd->add_option("--out", opts->out, "Output model folder, or FILE.gguf for a GGUF base")
      ->required();
  cmd->add_flag("--dequantize", opts->dequantize,
                "Quantized base: write float weights instead of requantizing");
  cmd->add_option("--dtype", opts->dtype,
                  "Float type with --dequantize: f32, f16 or bf16 (default: the scales' type)");
  cmd->add_option("--base-float", opts->base_float,
                  "Quantized base: its original float model; merge into it and quantize once");
  cmd->add_option("--min-delta-kept", opts->min_delta_kept,
                  "Warn when a layer keeps less of its delta than this (default 0.9)")
      ->check(CLI::Range(0.0, 1.0));
  add_max_shard_size_flag(*cmd, opts->max_shard_size);
  cmd->callback([opts, &global] { run_merge(*opts, global); });
}

}  // namespace lora::cli
