#include "data/dataset_chat.h"

#include <algorithm>
#include <stdexcept>

namespace lora::data {

namespace {

std::string_view trim(std::string_view s) {
  const auto ws = " \t\r\n";
  auto b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(ws);
  return s.substr(b, e - b + 1);
}

// Where `content` (or, for templates that trim, its trimmed form) sits in `text` at or after
// `from`; npos when absent.
std::pair<std::size_t, std::size_t> find_content(const std::string& text, std::string_view content,
                                                 std::size_t from) {
  if (content.empty()) return {from, 0};
  if (auto p = text.find(content, from); p != std::string::npos) return {p, content.size()};
  auto t = trim(content);
  if (t.empty()) return {from, 0};
  if (auto p = text.find(t, from); p != std::string::npos) return {p, t.size()};
  return {std::string::npos, 0};
}

std::size_t common_prefix(std::string_view a, std::string_view b) {
  auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  (void)ib;
  return std::size_t(ia - a.begin());
}

}  // namespace

std::vector<Segment> coalesce(std::vector<Segment> segments) {
  std::vector<Segment> out;
  for (auto& s : segments) {
    if (s.text.empty()) continue;
    if (!out.empty() && out.back().trained == s.trained)
      out.back().text += s.text;
    else
      out.push_back(std::move(s));
  }
  return out;
}

std::vector<Segment> chat_template_segments(const ChatTemplate& tmpl, const TokenizerConfig& config,
                                            const nlohmann::ordered_json& messages,
                                            const nlohmann::ordered_json& template_kwargs,
                                            const std::vector<std::string>& special_tokens) {
  const std::string full = render_chat(tmpl, config, messages, false, template_kwargs);
  std::vector<Segment> segments;
  std::size_t cursor = 0;       // everything before it is already in a segment
  std::size_t search_from = 0;  // turns appear in order
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    const std::string content = m.at("content").get<std::string>();
    const std::string role = m.at("role").get<std::string>();
    auto [pos, len] = find_content(full, content, search_from);
    if (pos == std::string::npos)
      throw std::runtime_error("messages[" + std::to_string(i) + "] (" + role +
                               "): its content is not in the text the chat template renders, so "
                               "the turn cannot be located to mask the prompt");
    search_from = pos + len;
    if (role != "assistant") continue;  // stays in the untrained text before the next assistant
    std::size_t end = pos + len;
    // The end-of-turn markup: what the template writes after this content when the turn is the
    // last one, as far as the full rendering agrees with it.
    nlohmann::ordered_json prefix = nlohmann::ordered_json::array();
    for (std::size_t j = 0; j <= i; ++j) prefix.push_back(messages[j]);
    const std::string alone = render_chat(tmpl, config, prefix, false, template_kwargs);
    if (auto q = alone.rfind(full.substr(pos, len)); q != std::string::npos && len > 0) {
      std::string_view suffix = std::string_view(alone).substr(q + len);
      std::string_view marker =
          suffix.substr(0, common_prefix(suffix, std::string_view(full).substr(end)));
      // Stop after the first special token (the end-of-turn), when there is one.
      std::size_t cut = marker.size();
      for (const auto& tok : special_tokens)
        if (auto at = marker.find(tok); !tok.empty() && at != std::string_view::npos)
          cut = std::min(cut, at + tok.size());
      end += cut;
    }
    segments.push_back({full.substr(cursor, pos - cursor), false});
    segments.push_back({full.substr(pos, end - pos), true});
    cursor = search_from = end;
  }
  segments.push_back({full.substr(cursor), false});
  return coalesce(std::move(segments));
}

std::vector<Segment> llama2_chat_segments(const nlohmann::ordered_json& messages) {
  std::vector<Segment> segments;
  std::string system;
  std::size_t first = 0;
  if (!messages.empty() && messages[0].at("role") == "system") {
    system = messages[0].at("content").get<std::string>();
    first = 1;
  }
  bool first_user = true;
  for (std::size_t i = first; i < messages.size(); ++i) {
    const std::string role = messages[i].at("role").get<std::string>();
    const std::string content = messages[i].at("content").get<std::string>();
    const bool last = i + 1 == messages.size();
    if (role == "user") {
      std::string text = first_user ? "" : "<s>";
      text += "[INST] ";
      if (first_user && !system.empty()) text += "<<SYS>>\n" + system + "\n<</SYS>>\n\n";
      text += content + " [/INST]";
      segments.push_back({std::move(text), false});
      first_user = false;
    } else if (role == "assistant") {
      segments.push_back({" " + content + " </s>" + (last ? "<s>" : ""), true});
    } else {
      throw std::runtime_error("messages[" + std::to_string(i) + "]: role \"" + role +
                               "\" has no place in Llama-2 chat (system first, then user and "
                               "assistant)");
    }
  }
  return coalesce(std::move(segments));
}

}  // namespace lora::data
