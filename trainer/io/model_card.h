// The README.md model card written beside an adapter, as PEFT's save_pretrained writes one: YAML
// front matter that the Hugging Face Hub reads (base_model, library_name, tags), then what the
// adapter is (method, rank, scale, target modules, layers) and, for a trained one, its data,
// steps and final losses, and how to load it.
#pragma once
#include <string>

#include "trainer/io/adapter_file.h"

namespace lora {

std::string model_card(const AdapterFile& adapter, AdapterFormat format);

// A path as it may appear in a file meant to be shared: as given when relative; an absolute
// path of this machine is cut to its last component.
std::string shareable_path(const std::string& path);

}  // namespace lora
