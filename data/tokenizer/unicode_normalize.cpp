#include "data/tokenizer/unicode_normalize.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/stringpiece.h>

#include <stdexcept>

namespace lora::data::unicode {

namespace {
const icu::Normalizer2& instance(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormalForm::NFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalForm::NFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalForm::NFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalForm::NFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  if (U_FAILURE(status) || n == nullptr)
    throw std::runtime_error(std::string("ICU normalizer unavailable: ") + u_errorName(status));
  return *n;
}
}  // namespace

std::string normalize(std::string_view text, NormalForm form) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  icu::StringByteSink<std::string> sink(&out);
  UErrorCode status = U_ZERO_ERROR;
  instance(form).normalizeUTF8(0, icu::StringPiece(text.data(), static_cast<int32_t>(text.size())),
                               sink, nullptr, status);
  if (U_FAILURE(status))
    throw std::runtime_error(std::string("Unicode normalization failed: ") + u_errorName(status));
  return out;
}

bool is_normalized(std::string_view text, NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  bool ok = instance(form).isNormalizedUTF8(
      icu::StringPiece(text.data(), static_cast<int32_t>(text.size())), status);
  return U_SUCCESS(status) && ok;
}

bool has_boundary_before(char32_t c, NormalForm form) {
  return instance(form).hasBoundaryBefore(static_cast<UChar32>(c));
}

}  // namespace lora::data::unicode
