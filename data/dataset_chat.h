// Laying a conversation out as text segments, each marked trained (assistant turns, with the
// end-of-turn text the format writes after them) or not (system/user turns and template markup).
#pragma once
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer/tokenizer.h"

namespace lora::data {

// A piece of the text a record becomes, and whether the loss covers it.
struct Segment {
  std::string text;
  bool trained = false;
};

// Renders `messages` with the model's template and splits the result into segments. Each
// assistant turn is found in the full rendering (in order); its end-of-turn text is what the
// template writes after the content when that turn ends a conversation (rendering messages[:i+1]),
// where the full rendering continues with the same text, up to and including the first special
// token in it (`special_tokens`; templates such as Llama-3's append the next header right after
// "<|eot_id|>", which is not the assistant's to learn). Rendering goes through render_chat (the
// same context as transformers' apply_chat_template), with `template_kwargs` such as
// enable_thinking.
// A template that rewrites a message so its content cannot be found is an error naming the turn.
std::vector<Segment> chat_template_segments(const ChatTemplate& tmpl, const TokenizerConfig& config,
                                            const nlohmann::ordered_json& messages,
                                            const nlohmann::ordered_json& template_kwargs,
                                            const std::vector<std::string>& special_tokens = {});

// Llama-2 chat as FastChat and axolotl lay it out (no Jinja):
//   [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s><s>[INST] {user} [/INST]
//   ...
// The " </s>" after an assistant turn is trained; the "<s>" that follows it opens the next user
// turn (masked), except after the last turn, where it closes the assistant turn (trained), as
// axolotl labels it.
std::vector<Segment> llama2_chat_segments(const nlohmann::ordered_json& messages);

// Joins segments that share a flag and drops empty ones.
std::vector<Segment> coalesce(std::vector<Segment> segments);

}  // namespace lora::data
