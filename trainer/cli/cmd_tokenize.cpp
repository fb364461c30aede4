// `lora tokenize`: JSON lines in, JSON lines out, through a model's own tokenizer.json and chat
// template. {"text": ...} gives ids (without and with special tokens) and the decoded ids;
// {"messages": [...], "add_generation_prompt": bool, "template_kwargs": {...}} gives the
// rendered chat and its ids (without added special tokens).
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "data/chat_template.h"
#include "data/tokenizer/tokenizer.h"
#include "trainer/cli/commands.h"
#include "trainer/gguf_model.h"
#include "trainer/gguf_tokenizer.h"

namespace lora::cli {

namespace {
using nlohmann::ordered_json;

struct TokenizeOptions {
  std::string model;
  std::string input;  // empty: stdin
};

// The tokenizer folder's pieces, loaded once; the chat template only when a chat line comes.
class TokenizeSession {
 public:
  explicit TokenizeSession(const std::filesystem::path& model_path)
      : dir_(std::filesystem::is_directory(model_path) ? model_path : model_path.parent_path()),
        tokenizer_(load_model_tokenizer(model_path)),
        config_(is_gguf_file(model_path) ? load_model_tokenizer_config(model_path)
                                         : data::TokenizerConfig::load(dir_)) {}

  ordered_json handle(const ordered_json& record) {
    if (auto text = record.find("text"); text != record.end()) {
      if (!text->is_string()) throw std::runtime_error("\"text\" must be a string");
      const auto& s = text->get_ref<const std::string&>();
      auto ids = tokenizer_.encode(s, false);
      ordered_json out;
      out["ids"] = ids;
      out["ids_with_special"] = tokenizer_.encode(s, true);
      out["decoded"] = tokenizer_.decode(ids, false);
      return out;
    }
    if (auto messages = record.find("messages"); messages != record.end()) {
      if (!messages->is_array()) throw std::runtime_error("\"messages\" must be a list");
      bool add_generation_prompt = false;
      if (auto it = record.find("add_generation_prompt"); it != record.end() && !it->is_null()) {
        if (!it->is_boolean())
          throw std::runtime_error("\"add_generation_prompt\" must be true or false");
        add_generation_prompt = it->get<bool>();
      }
      ordered_json kwargs = ordered_json::object();
      if (auto it = record.find("template_kwargs"); it != record.end() && !it->is_null()) {
        if (!it->is_object()) throw std::runtime_error("\"template_kwargs\" must be an object");
        kwargs = *it;
      }
      std::string rendered =
          data::render_chat(chat_template(), config_, *messages, add_generation_prompt, kwargs);
      ordered_json out;
      out["rendered"] = rendered;
      out["ids"] = tokenizer_.encode(rendered, false);
      return out;
    }
    throw std::runtime_error("expected a \"text\" or a \"messages\" field");
  }

 private:
  const data::ChatTemplate& chat_template() {
    if (!chat_template_) {
      if (!config_.chat_template)
        throw std::runtime_error((dir_ / "tokenizer_config.json").string() +
                                 " has no chat_template");
      chat_template_ = data::ChatTemplate::parse(*config_.chat_template);
    }
    return *chat_template_;
  }

  std::filesystem::path dir_;
  data::Tokenizer tokenizer_;
  data::TokenizerConfig config_;
  std::optional<data::ChatTemplate> chat_template_;
};

void run_tokenize(const TokenizeOptions& opt) {
  TokenizeSession session(opt.model);
  std::ifstream file;
  if (!opt.input.empty()) {
    file.open(opt.input, std::ios::binary);
    if (!file) throw std::runtime_error("cannot read " + opt.input);
  }
  std::istream& in = opt.input.empty() ? std::cin : file;
  const std::string source = opt.input.empty() ? "stdin" : opt.input;
  std::string line;
  for (std::size_t line_no = 1; std::getline(in, line); ++line_no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    try {
      ordered_json record = ordered_json::parse(line);
      if (!record.is_object()) throw std::runtime_error("expected a JSON object");
      std::cout << session.handle(record).dump(-1, ' ', false,
                                               ordered_json::error_handler_t::replace)
                << '\n';
    } catch (const std::exception& e) {
      std::cout.flush();
      throw std::runtime_error(source + ":" + std::to_string(line_no) + ": " + e.what());
    }
  }
  std::cout.flush();
}
}  // namespace

void add_tokenize(CLI::App& app, const GlobalOptions&) {
  auto opt = std::make_shared<TokenizeOptions>();
  auto* cmd = app.add_subcommand(
      "tokenize",
      "Tokenize JSON lines with a model's tokenizer.json and chat template.\n"
      "  {\"text\": ...}  ->  {\"ids\", \"ids_with_special\", \"decoded\"}\n"
      "  {\"messages\": [...], \"add_generation_prompt\": bool, \"template_kwargs\": {...}}\n"
      "                ->  {\"rendered\", \"ids\"}");
  cmd->add_option("--model", opt->model, "Folder with tokenizer.json (and tokenizer_config.json)")
      ->required();
  cmd->add_option("--input", opt->input, "JSON lines file (default: stdin)");
  cmd->callback([opt] { run_tokenize(*opt); });
}

}  // namespace lora::cli
