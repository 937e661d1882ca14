// Mapping claim outcomes to HTTP answers (Idempotency-Key semantics as in the
// IETF draft and Stripe): no dependencies beyond the standard library.
#include <algorithm>
#include <cstdio>

#include "idempotency/client.hpp"

namespace idempotency {

std::string json_quote(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  out.push_back('"');
  return out;
}

HttpReply error_reply(int status, std::string_view code, std::string_view message) {
  HttpReply r;
  r.status = status;
  r.body = "{\"error\": " + json_quote(code) + ", \"message\": " + json_quote(message) + "}";
  r.headers.emplace_back("Content-Type", "application/json");
  return r;
}

HttpReply missing_key_reply() {
  return error_reply(400, "missing_idempotency_key",
                     "this endpoint requires an Idempotency-Key header of 1 to 255 bytes");
}

bool valid_key(std::string_view key) noexcept { return !key.empty() && key.size() <= 255; }

namespace {

struct JsonReader {
  std::string_view s;
  std::size_t i = 0;

  [[noreturn]] void fail(const char* what) const {
    throw Error("22P02", std::string("idempotency: headers_json is not a flat JSON object: ") + what);
  }
  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }
  unsigned hex4() {
    if (i + 4 > s.size()) fail("bad \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s[i++];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<unsigned>(c - 'A' + 10);
      else
        fail("bad \\u escape");
    }
    return v;
  }
  std::string string() {
    if (!eat('"')) fail("expected a string");
    std::string out;
    while (true) {
      if (i >= s.size()) fail("unterminated string");
      char c = s[i++];
      if (c == '"') return out;
      if (c != '\\') {
        out.push_back(c);
        continue;
      }
      if (i >= s.size()) fail("unterminated escape");
      char e = s[i++];
      switch (e) {
        case '"':
          out.push_back('"');
          break;
        case '\\':
          out.push_back('\\');
          break;
        case '/':
          out.push_back('/');
          break;
        case 'b':
          out.push_back('\b');
          break;
        case 'f':
          out.push_back('\f');
          break;
        case 'n':
          out.push_back('\n');
          break;
        case 'r':
          out.push_back('\r');
          break;
        case 't':
          out.push_back('\t');
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xd800 && cp < 0xdc00 && i + 6 <= s.size() && s[i] == '\\' && s[i + 1] == 'u') {
            i += 2;
            unsigned lo = hex4();
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          }
          utf8(out, cp);
          break;
        }
        default:
          fail("bad escape");
      }
    }
  }
  std::string scalar() {
    ws();
    if (i < s.size() && s[i] == '"') return string();
    std::size_t start = i;
    while (i < s.size() && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n') ++i;
    if (start == i) fail("expected a value");
    std::string_view v = s.substr(start, i - start);
    if (v.front() == '{' || v.front() == '[') fail("nested values are not headers (only strings, scalars and arrays of them)");
    return std::string(v);
  }
};

}  // namespace

std::vector<std::pair<std::string, std::string>> parse_headers_json(std::string_view json) {
  std::vector<std::pair<std::string, std::string>> out;
  JsonReader r{json};
  r.ws();
  if (r.i == json.size()) return out;  // empty: no headers
  if (!r.eat('{')) r.fail("expected '{'");
  if (!r.eat('}')) {
    do {
      std::string name = r.string();
      if (!r.eat(':')) r.fail("expected ':'");
      if (r.eat('[')) {  // a header sent more than once (e.g. two Set-Cookie lines): one line per value
        if (!r.eat(']')) {
          do out.emplace_back(name, r.scalar());
          while (r.eat(','));
          if (!r.eat(']')) r.fail("expected ']'");
        }
      } else {
        out.emplace_back(std::move(name), r.scalar());
      }
    } while (r.eat(','));
    if (!r.eat('}')) r.fail("expected '}'");
  }
  r.ws();
  if (r.i != json.size()) r.fail("trailing characters");
  return out;
}

HttpReply to_http(const ClaimResult& result, TimePoint now) {
  switch (result.outcome) {
    case Outcome::Claimed:
    case Outcome::Replay: {
      if (!result.response) {
        return error_reply(500, "no_response", "the key was claimed but no response was produced (use execute())");
      }
      HttpReply r;
      r.status = result.response->status;
      r.body = result.response->body;
      r.headers = parse_headers_json(result.response->headers_json);
      if (result.outcome == Outcome::Replay) r.headers.emplace_back("Idempotent-Replayed", "true");
      return r;
    }
    case Outcome::InProgress: {
      long long seconds = 1;
      if (result.locked_until && *result.locked_until > now) {
        auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(*result.locked_until - now).count();
        seconds = std::max<long long>(1, (ms + 999) / 1000);
      }
      HttpReply r = error_reply(409, "request_in_progress",
                                "a request with this Idempotency-Key is still being processed; retry later");
      r.headers.emplace_back("Retry-After", std::to_string(seconds));
      return r;
    }
    case Outcome::Mismatch:
      return error_reply(422, "idempotency_key_reused",
                         "this Idempotency-Key was already used with a different request; use a new key");
  }
  return error_reply(500, "internal_error", "unknown outcome");
}

}  // namespace idempotency
