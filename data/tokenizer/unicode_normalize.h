// Unicode normalization forms (NFC, NFD, NFKC, NFKD) through ICU.
#pragma once
#include <string>
#include <string_view>

namespace lora::data::unicode {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

// The normalized form of valid UTF-8 `text`.
std::string normalize(std::string_view text, NormalForm form);
// True when `text` is already in `form` (cheap for ASCII and most real text).
bool is_normalized(std::string_view text, NormalForm form);
// True when normalization never combines or reorders across a boundary before `c`, so text may
// be normalized piece by piece between such boundaries.
bool has_boundary_before(char32_t c, NormalForm form);

}  // namespace lora::data::unicode
