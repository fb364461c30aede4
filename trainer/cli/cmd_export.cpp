// `lora export`: writes an adapter (of either format, detected from its files) in the MLX-LM or
// PEFT layout, so that the other ecosystem loads it as it is. The base model is needed only when
// the adapter does not say how deep its base is (--model or --base-layers).
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/io/adapter_file.h"
#include "trainer/io/adapter_gguf.h"
#include "trainer/io/adapter_io.h"
#include "trainer/model_config.h"

namespace lora::cli {

namespace {

struct ExportOptions {
  std::string adapter_path;
  std::string to;
  std::string out;
  std::string base_model;
  int64_t base_layers = 0;
  std::string model;  // the base (folder or GGUF file): layer count, name, --to gguf layout
};

// llama.cpp's GGUF LoRA: one file, laid out for the base (its architecture and q/k row order).
void export_gguf(const ExportOptions& o, const GlobalOptions& global) {
  if (o.model.empty())
    throw std::runtime_error("--to gguf needs --model (the base folder or GGUF file)");
  const AdapterFile adapter = AdapterFile::read(o.adapter_path);
  write_gguf_adapter(adapter, adapter_base_config(o.model), o.out);
  if (global.json) {
    nlohmann::json summary = adapter.summary();
    summary["written"] = o.out;
    summary["written_format"] = "gguf";
    std::printf("%s\n", summary.dump().c_str());
    return;
  }
  std::printf("wrote gguf adapter to %s\n", o.out.c_str());
}

void run_export(const ExportOptions& o, const GlobalOptions& global) {
  if (o.to == "gguf") return export_gguf(o, global);
  const AdapterFormat format = adapter_format_from_name(o.to);
  AdapterFile adapter = AdapterFile::read(o.adapter_path);
  if (!o.model.empty()) {
    const std::filesystem::path dir = folder_path(o.model);
    const ModelConfig config = adapter_base_config(dir);
    adapter.base_num_layers = config.num_layers;
    if (adapter.base_model.empty()) adapter.base_model = base_model_name(config.raw, dir);
  }
  if (o.base_layers > 0) adapter.base_num_layers = o.base_layers;
  if (!o.base_model.empty()) adapter.base_model = o.base_model;
  const std::filesystem::path out = folder_path(o.out);
  adapter.write(out, format);

  nlohmann::json summary = adapter.summary();
  summary["written"] = out.string();
  summary["written_format"] = adapter_format_name(format);
  if (global.json) {
    std::printf("%s\n", summary.dump().c_str());
    return;
  }
  if (!global.quiet) {
    std::printf("read %s adapter %s: %zu pairs, ranks %s, scale %s, modules %s, layers %s\n",
                std::string(adapter_format_name(adapter.format)).c_str(),
                adapter.source.string().c_str(), adapter.pairs.size(),
                summary["ranks"].dump().c_str(),
                summary.contains("scale") ? summary["scale"].dump().c_str() : "(per module)",
                summary["modules"].dump().c_str(), layer_ranges(adapter.layers()).c_str());
  }
  std::printf("wrote %s adapter to %s\n", std::string(adapter_format_name(format)).c_str(),
              out.string().c_str());
}

}  // namespace

void add_export(CLI::App& app, const GlobalOptions& global) {
  auto opts = std::make_shared<ExportOptions>();
  auto* cmd = app.add_subcommand(
      "export",
      "Write an adapter (MLX-LM or PEFT, detected) in the MLX-LM or PEFT layout, e.g. for "
      "transformers/PEFT or mlx_lm");
  cmd->add_option("--adapter-path", opts->adapter_path,
                  "Adapter folder, or its .safetensors file (adapter_config.json beside it)")
      ->required();
  cmd->add_option("--to", opts->to, "Layout to write: peft, mlx or gguf (llama.cpp --lora)")
      ->required()
      ->check(CLI::IsMember({"peft", "mlx", "gguf"}));
  cmd->add_option("--out", opts->out, "Output folder (a .gguf file for --to gguf)")->required();
  cmd->add_option("--base-model", opts->base_model,
                  "Base model name written into the config (PEFT base_model_name_or_path)");
  cmd->add_option("--model", opts->model,
                  "Base model folder or GGUF file: its layer count (and the base name when the "
                  "adapter has none); for --to gguf, its architecture and q/k layout (required)");
  cmd->add_option("--base-layers", opts->base_layers,
                  "Layer count of the base model (default: from --model, or from the adapter "
                  "when it says; MLX-LM output needs it)")
      ->check(CLI::PositiveNumber);
  cmd->callback([opts, &global] { run_export(*opts, global); });
}

}  // namespace lora::cli
