#include "trainer/model_convert.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/quant.h"
#include "trainer/io/model_folder.h"
#include "trainer/model.h"

namespace lora {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

bool is_embedding(const std::string& name) {
  return name.ends_with("embed_tokens.weight") || name.ends_with("lm_head.weight");
}

}  // namespace

ConvertReport convert_model(const fs::path& model_dir, const fs::path& out_dir,
                            const ConvertOptions& options) {
  check_distinct_output(out_dir, model_dir);
  if (options.quantize_bits == 0 && !options.dtype)
    throw std::runtime_error("nothing to convert: give a quantization (bits) or a dtype");
  if (options.quantize_bits != 0) check_quantization(options.quantize_bits, options.group_size);
  if (options.dtype && !writable_float(*options.dtype))
    throw std::runtime_error("the dtype must be f32, f16 or bf16, not " +
                             std::string(dtype_name(*options.dtype)));
  json config = read_model_config_json(model_dir);
  const WeightSet weights = WeightSet::open_dir(model_dir);
  const bool quantized_base = quantization_of(config).has_value();
  if (quantized_base && options.quantize_bits != 0)
    throw std::runtime_error(model_dir.string() +
                             " is already quantized; quantize its float "
                             "weights instead (or convert it to a float dtype first)");

  ConvertReport report;
  std::vector<TensorData> out;
  for (const auto& name : weights.names()) {
    if (is_quantization_companion(weights, name)) continue;
    if (is_quantized_weight(weights, name)) {  // quantized base -> floats
      const std::string prefix = weight_prefix(name);
      const auto q = read_quantized(weights, prefix, *quantization_of(config, prefix));
      out.push_back(TensorData::convert(name, options.dtype.value_or(q.scale_dtype),
                                        {q.rows, q.cols}, dequantize(q)));
      ++report.dequantized;
      continue;
    }
    const TensorInfo& info = weights.info(name);
    const bool is_float = writable_float(info.dtype) || info.dtype == DType::F64;
    const bool matrix = info.shape.size() == 2 && name.ends_with(".weight");
    if (options.quantize_bits != 0 && is_float && matrix &&
        (options.quantize_embedding || !is_embedding(name))) {
      if (quantizable(info.shape[1], options.quantize_bits, options.group_size)) {
        const DType scale_dtype =
            options.dtype.value_or(writable_float(info.dtype) ? info.dtype : DType::F32);
        append_quantized(out, weight_prefix(name),
                         quantize(weights.read_f32(name), info.shape[0], info.shape[1],
                                  options.quantize_bits, options.group_size, scale_dtype));
        ++report.quantized;
        continue;
      }
      ++report.kept_float;
    } else {
      ++report.copied;
    }
    if (is_float && options.dtype && info.dtype != *options.dtype)
      out.push_back(TensorData::convert(name, *options.dtype, info.shape, weights.read_f32(name)));
    else
      out.push_back(copy_tensor(weights, name));
  }

  ModelFolderOptions folder;
  folder.max_shard_bytes = options.max_shard_bytes;
  if (options.quantize_bits != 0) {
    const json q = {{"group_size", options.group_size}, {"bits", options.quantize_bits}};
    config["quantization"] = q;
    config["quantization_config"] = q;
    folder.format_metadata = "mlx";
  } else {
    config.erase("quantization");
    config.erase("quantization_config");
  }
  if (options.dtype) config["torch_dtype"] = torch_dtype_name(*options.dtype);
  write_model_folder(out_dir, model_dir, config, std::move(out), folder);
  return report;
}

}  // namespace lora
