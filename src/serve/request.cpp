#include "serve/request.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <new>
#include <numeric>
#include <set>
#include <tuple>

#include "core/error.h"
#include "image/base64.h"

namespace lcmd::serve {

using json = nlohmann::json;

namespace {

constexpr int kDefaultSide = 256;
constexpr int kDefaultSteps = 4;
constexpr double kDefaultGuidance = 8.0;
constexpr const char* kU64Range = "an integer in 0..18446744073709551615";

std::string strip_exception_prefix(const std::string& what) {
  // nlohmann messages start with "[json.exception.parse_error.101] ": noise for a client.
  const size_t end = what.find("] ");
  return what.rfind('[', 0) == 0 && end != std::string::npos ? what.substr(end + 2) : what;
}

// Parses the body as a JSON object. Duplicate keys are refused: nlohmann keeps the last one,
// which would silently hide a client bug such as two "steps".
json parse_object(std::string_view body) {
  if (body.empty())
    throw invalid_request("the request body is empty; send a JSON object such as {\"prompt\": \"a photo of a cat\"}");
  std::vector<std::set<std::string>> open_objects;
  std::string duplicate;
  const json::parser_callback_t track_keys = [&](int, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) {
      open_objects.emplace_back();
    } else if (event == json::parse_event_t::object_end) {
      open_objects.pop_back();
    } else if (event == json::parse_event_t::key) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!open_objects.back().insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json parsed;
  try {
    parsed = json::parse(body.begin(), body.end(), track_keys);
  } catch (const json::parse_error& e) {
    throw invalid_request("the request body is not valid JSON: " + printable(strip_exception_prefix(e.what()), 200));
  } catch (const json::exception& e) {  // out_of_range.406: a number beyond double's range
    throw invalid_request("the request body has an unreadable number: " +
                          printable(strip_exception_prefix(e.what()), 200));
  }
  if (!duplicate.empty()) throw invalid_request("field '" + printable(duplicate) + "' appears more than once");
  if (!parsed.is_object())
    throw invalid_request(std::string("the request body must be a JSON object, got ") +
                          (parsed.is_number() ? "a number" : parsed.type_name()));
  return parsed;
}

std::string type_of(const json& v) {
  if (v.is_number_float()) return "a number with a fraction";
  if (v.is_number()) return "an integer";
  if (v.is_string()) return "a string";
  if (v.is_boolean()) return "a boolean";
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return "null";
}

std::string shown(const json& v) {
  if (v.is_string()) return "\"" + printable(v.get_ref<const std::string&>()) + "\"";
  if (v.is_number()) return v.dump();
  return type_of(v);
}

[[noreturn]] void out_of_rule(const std::string& field, const std::string& rule, const json& v) {
  throw invalid_request(field + " must be " + rule + "; got " + shown(v));
}

// The fields of one request object: unknown names are refused, null reads as absent.
class Fields {
 public:
  Fields(const json& object, std::vector<std::string> allowed) : object_(object), allowed_(std::move(allowed)) {
    for (const auto& [name, value] : object.items())
      if (std::find(allowed_.begin(), allowed_.end(), name) == allowed_.end())
        throw invalid_request("unknown field '" + printable(name) + "'; allowed fields: " + allowed_list());
  }
  const json* get(const std::string& name) const {
    const auto it = object_.find(name);
    return it == object_.end() || it->is_null() ? nullptr : &*it;
  }

 private:
  std::string allowed_list() const {
    return std::accumulate(std::next(allowed_.begin()), allowed_.end(), allowed_.front(),
                           [](const std::string& a, const std::string& b) { return a + ", " + b; });
  }
  const json& object_;
  std::vector<std::string> allowed_;
};

// An integer in [lo, hi] (and a multiple of `multiple_of`); `rule` states that for messages.
int64_t read_integer(const json* v, const std::string& field, int64_t fallback, int64_t lo, int64_t hi,
                     const std::string& rule, int64_t multiple_of = 1) {
  if (!v) return fallback;
  if (!v->is_number_integer()) out_of_rule(field, rule, *v);
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    out_of_rule(field, rule, *v);
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi || x % multiple_of != 0) out_of_rule(field, rule, *v);
  return x;
}

std::string side_rule(const RequestLimits& limits) {
  return "a multiple of 8 in 8.." + std::to_string(limits.max_side);
}

int read_side(const json* v, const std::string& field, const RequestLimits& limits) {
  const int fallback = std::min(kDefaultSide, limits.max_side);
  return static_cast<int>(read_integer(v, field, fallback, 8, limits.max_side, side_rule(limits), 8));
}

int read_steps(const json* v, const RequestLimits& limits) {
  const std::string rule = "an integer in 1.." + std::to_string(limits.max_steps);
  return static_cast<int>(
      read_integer(v, "steps", std::min(kDefaultSteps, limits.max_steps), 1, limits.max_steps, rule));
}

double read_guidance(const json* v, const RequestLimits& limits) {
  if (!v) return kDefaultGuidance;
  std::string upper = json(limits.max_guidance).dump();
  if (upper.size() > 2 && upper.compare(upper.size() - 2, 2, ".0") == 0) upper.resize(upper.size() - 2);
  const std::string rule = "a number in 0.." + upper;
  if (!v->is_number()) out_of_rule("guidance_scale", rule, *v);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < 0 || x > limits.max_guidance) out_of_rule("guidance_scale", rule, *v);
  return x;
}

std::optional<uint64_t> read_seed(const json* v) {
  if (!v) return std::nullopt;
  if (!v->is_number_integer() || (!v->is_number_unsigned() && v->get<int64_t>() < 0))
    out_of_rule("seed", kU64Range, *v);
  return v->get<uint64_t>();
}

// Byte offset of the first invalid UTF-8 sequence (overlongs, surrogates, > U+10FFFF
// included), or npos. The JSON parser already refuses these; this guards other callers.
size_t first_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int len = 0;
    uint32_t cp = 0;
    if (c < 0x80)
      len = 1, cp = c;
    else if ((c & 0xE0) == 0xC0)
      len = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
      len = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
      len = 4, cp = c & 0x07;
    else
      return i;
    if (i + len > s.size()) return i;
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = cp << 6 | (cc & 0x3F);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string read_prompt(const json* v, const RequestLimits& limits) {
  const std::string rule = "a string of 1.." + std::to_string(limits.max_prompt_bytes) + " bytes of UTF-8";
  if (!v) throw invalid_request("prompt is required: " + rule);
  if (!v->is_string()) out_of_rule("prompt", rule, *v);
  const std::string& prompt = v->get_ref<const std::string&>();
  if (prompt.empty()) throw invalid_request("prompt must be " + rule + "; got an empty string");
  if (prompt.size() > limits.max_prompt_bytes)
    throw invalid_request("prompt must be " + rule + "; got " + std::to_string(prompt.size()) + " bytes");
  if (const size_t bad = first_invalid_utf8(prompt); bad != std::string_view::npos)
    throw invalid_request("prompt must be " + rule + "; invalid UTF-8 at byte " + std::to_string(bad));
  return prompt;
}

// Optional: the unconditional prompt of classifier-free guidance (plain SD models); may be empty.
std::string read_negative_prompt(const json* v, const RequestLimits& limits) {
  const std::string rule = "a string of 0.." + std::to_string(limits.max_prompt_bytes) + " bytes of UTF-8";
  if (!v) return "";
  if (!v->is_string()) out_of_rule("negative_prompt", rule, *v);
  const std::string& text = v->get_ref<const std::string&>();
  if (text.size() > limits.max_prompt_bytes)
    throw invalid_request("negative_prompt must be " + rule + "; got " + std::to_string(text.size()) + " bytes");
  if (const size_t bad = first_invalid_utf8(text); bad != std::string_view::npos)
    throw invalid_request("negative_prompt must be " + rule + "; invalid UTF-8 at byte " + std::to_string(bad));
  return text;
}

// Optional: "vae" or "taesd" (the server must have been started with a TAESD folder for it).
std::string read_decoder(const json* v) {
  if (!v) return "";
  if (!v->is_string() || (v->get_ref<const std::string&>() != "vae" && v->get_ref<const std::string&>() != "taesd"))
    out_of_rule("decoder", "\"vae\" or \"taesd\"", *v);
  return v->get<std::string>();
}

void read_output_format(const json* v) {
  if (v && !(v->is_string() && v->get_ref<const std::string&>() == "png")) out_of_rule("output_format", "\"png\"", *v);
}

// "WxH" → width, height, each checked like the native width/height.
std::pair<int, int> read_size(const json* v, const RequestLimits& limits) {
  const int fallback = std::min(kDefaultSide, limits.max_side);
  if (!v) return {fallback, fallback};
  const std::string rule = "\"WIDTHxHEIGHT\" with each side " + side_rule(limits) + ", e.g. \"256x256\"";
  if (!v->is_string()) out_of_rule("size", rule, *v);
  const std::string& s = v->get_ref<const std::string&>();
  const size_t x = s.find('x');
  auto side = [&](std::string_view digits) {
    if (digits.empty() || digits.size() > 5 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      out_of_rule("size", rule, *v);
    const int n = std::atoi(std::string(digits).c_str());
    if (n < 8 || n > limits.max_side || n % 8 != 0) out_of_rule("size", rule, *v);
    return n;
  };
  if (x == std::string::npos) out_of_rule("size", rule, *v);
  return {side(std::string_view(s).substr(0, x)), side(std::string_view(s).substr(x + 1))};
}

void read_openai_only_fields(const Fields& fields) {
  if (const json* n = fields.get("n")) read_integer(n, "n", 1, 1, 1, "1 (one image per request)");
  if (const json* format = fields.get("response_format")) {
    if (format->is_string() && format->get_ref<const std::string&>() == "url")
      throw invalid_request(
          "response_format \"url\" is not supported: lcmd keeps no images to link to; use \"b64_json\"");
    if (!(format->is_string() && format->get_ref<const std::string&>() == "b64_json"))
      out_of_rule("response_format", "\"b64_json\"", *format);
  }
  for (const char* ignored : {"model", "user"})
    if (const json* v = fields.get(ignored); v && !v->is_string()) out_of_rule(ignored, "a string", *v);
}

double round_ms(double ms) { return std::round(ms * 1000.0) / 1000.0; }

}  // namespace

void check_limits(const RequestLimits& limits) {
  if (limits.max_side < 8 || limits.max_side % 8 != 0 || limits.max_side > kMaxImageSide)
    throw InputError("the maximum image side must be a multiple of 8 in 8.." + std::to_string(kMaxImageSide) +
                     ", got " + std::to_string(limits.max_side));
  if (limits.max_steps < 1 || limits.max_steps > kMaxSteps)
    throw InputError("the maximum steps must be in 1.." + std::to_string(kMaxSteps) + ", got " +
                     std::to_string(limits.max_steps));
  if (limits.max_prompt_bytes < 1) throw InputError("the maximum prompt length must be at least 1 byte");
  if (!std::isfinite(limits.max_guidance) || limits.max_guidance < 0)
    throw InputError("the maximum guidance scale must be a finite number >= 0");
}

GenerateRequest parse_generate_request(std::string_view body, const RequestLimits& limits) {
  const json object = parse_object(body);
  const Fields fields(object, {"prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "seed",
                               "decoder", "output_format"});
  GenerateRequest request;
  request.prompt = read_prompt(fields.get("prompt"), limits);
  request.negative_prompt = read_negative_prompt(fields.get("negative_prompt"), limits);
  request.decoder = read_decoder(fields.get("decoder"));
  request.width = read_side(fields.get("width"), "width", limits);
  request.height = read_side(fields.get("height"), "height", limits);
  request.steps = read_steps(fields.get("steps"), limits);
  request.guidance_scale = read_guidance(fields.get("guidance_scale"), limits);
  request.seed = read_seed(fields.get("seed"));
  read_output_format(fields.get("output_format"));
  return request;
}

GenerateRequest parse_openai_image_request(std::string_view body, const RequestLimits& limits) {
  const json object = parse_object(body);
  const Fields fields(object,
                      {"prompt", "n", "size", "response_format", "model", "user", "seed", "steps", "guidance_scale"});
  GenerateRequest request;
  request.prompt = read_prompt(fields.get("prompt"), limits);
  read_openai_only_fields(fields);
  std::tie(request.width, request.height) = read_size(fields.get("size"), limits);
  request.steps = read_steps(fields.get("steps"), limits);
  request.guidance_scale = read_guidance(fields.get("guidance_scale"), limits);
  request.seed = read_seed(fields.get("seed"));
  return request;
}

json timings_json(const GenerateOutcome& o) {
  const StageTimings& t = o.timings;
  json steps = json::array();
  for (double ms : t.unet_step_ms) steps.push_back(round_ms(ms));
  return {{"queue", round_ms(o.queue_ms)},
          {"tokenize", round_ms(t.tokenize_ms)},
          {"text_encoder", round_ms(t.text_encoder_ms)},
          {"unet", round_ms(std::accumulate(t.unet_step_ms.begin(), t.unet_step_ms.end(), 0.0))},
          {"unet_steps", steps},
          {"vae_decode", round_ms(t.vae_decode_ms)},
          {"png", round_ms(t.png_ms)},
          {"generate", round_ms(t.total_ms)},
          {"cache_hits", {{"text_embedding", o.text_embedding_cached}, {"result", o.result_cached}}}};
}

std::string generate_response_json(const GenerateOutcome& o) {
  const json reply = {{"image_base64", base64_encode(o.png)},
                      {"seed", o.seed},
                      {"width", o.width},
                      {"height", o.height},
                      {"steps", o.steps},
                      {"guidance_scale", o.guidance_scale},
                      {"output_format", "png"},
                      {"timings_ms", timings_json(o)}};
  return reply.dump();
}

std::string openai_response_json(const GenerateOutcome& o, int64_t created_unix_seconds) {
  const json reply = {{"created", created_unix_seconds},
                      {"data", json::array({{{"b64_json", base64_encode(o.png)}}})},
                      {"seed", o.seed},
                      {"timings_ms", timings_json(o)}};
  return reply.dump();
}

std::string error_response_json(const ApiError& error) {
  const json reply = {{"error", {{"type", error.type()}, {"message", error.what()}}}};
  // Messages can quote engine text; never let a stray byte turn an error into a crash.
  return reply.dump(-1, ' ', false, json::error_handler_t::replace);
}

ApiError to_api_error(const std::exception& error) {
  if (const auto* api = dynamic_cast<const ApiError*>(&error)) return *api;
  if (dynamic_cast<const InputError*>(&error)) return invalid_request(error.what());
  if (dynamic_cast<const ModelError*>(&error)) return ApiError(500, "model_error", error.what());
  if (dynamic_cast<const std::bad_alloc*>(&error))
    return ApiError(500, "out_of_memory", "the server ran out of memory for this request; try a smaller size");
  return internal_error(std::string("generation failed: ") + error.what());
}

bool accepts_png(std::string_view accept) {
  // Media ranges with their q values; only exact types count (*/* means "anything", and
  // anything is answered with JSON).
  double png_q = 0, json_q = 0;
  size_t start = 0;
  while (start <= accept.size()) {
    const size_t comma = std::min(accept.find(',', start), accept.size());
    std::string_view range = accept.substr(start, comma - start);
    start = comma + 1;
    double q = 1;
    if (const size_t semi = range.find(';'); semi != std::string_view::npos) {
      const std::string params(range.substr(semi + 1));
      if (const size_t qpos = params.find("q="); qpos != std::string::npos) q = std::atof(params.c_str() + qpos + 2);
      range = range.substr(0, semi);
    }
    while (!range.empty() && range.front() == ' ') range.remove_prefix(1);
    while (!range.empty() && range.back() == ' ') range.remove_suffix(1);
    std::string type(range);
    std::transform(type.begin(), type.end(), type.begin(), [](unsigned char c) { return std::tolower(c); });
    if (type == "image/png") png_q = std::max(png_q, q);
    if (type == "application/json") json_q = std::max(json_q, q);
  }
  return png_q > 0 && png_q > json_q;
}

std::string printable(std::string_view text, size_t max_chars) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (out.size() >= max_chars) return out + "...";
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace lcmd::serve
