// The HTTP mapping helpers: pure functions, no server needed.
#include <gtest/gtest.h>

#include "idempotency/client.hpp"

using namespace idempotency;
using namespace std::chrono_literals;

namespace {
std::string header(const HttpReply& r, const std::string& name) {
  for (const auto& [n, v] : r.headers)
    if (n == name) return v;
  return "<absent>";
}
}  // namespace

TEST(Http, MissingKeyIs400) {
  HttpReply r = missing_key_reply();
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("\"error\": \"missing_idempotency_key\""), std::string::npos);
  EXPECT_EQ(header(r, "Content-Type"), "application/json");
}

TEST(Http, ValidKey) {
  EXPECT_FALSE(valid_key(""));
  EXPECT_TRUE(valid_key("a"));
  EXPECT_TRUE(valid_key(std::string(255, 'k')));
  EXPECT_FALSE(valid_key(std::string(256, 'k')));
}

TEST(Http, InProgressIs409WithRetryAfterFromLease) {
  ClaimResult c;
  c.outcome = Outcome::InProgress;
  auto now = Clock::now();
  c.locked_until = now + 4200ms;
  HttpReply r = to_http(c, now);
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(header(r, "Retry-After"), "5");
  c.locked_until.reset();  // held by an open transaction: no lease known
  EXPECT_EQ(header(to_http(c, now), "Retry-After"), "1");
  c.locked_until = now - 10s;  // lease already over
  EXPECT_EQ(header(to_http(c, now), "Retry-After"), "1");
}

TEST(Http, MismatchIs422) {
  ClaimResult c;
  c.outcome = Outcome::Mismatch;
  HttpReply r = to_http(c);
  EXPECT_EQ(r.status, 422);
  EXPECT_NE(r.body.find("\"error\""), std::string::npos);
  EXPECT_NE(r.body.find("\"message\""), std::string::npos);
}

TEST(Http, ReplayIsStoredResponseByteForByteAndMarked) {
  ClaimResult c;
  c.outcome = Outcome::Replay;
  c.response = Response{201, std::string("a\0b", 3), R"({"Content-Type": "application/octet-stream", "X-N": 3})"};
  HttpReply r = to_http(c);
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.body, std::string("a\0b", 3));
  EXPECT_EQ(header(r, "Idempotent-Replayed"), "true");
  EXPECT_EQ(header(r, "Content-Type"), "application/octet-stream");
  EXPECT_EQ(header(r, "X-N"), "3");
}

TEST(Http, ClaimedWithResponseIsNotMarked) {
  ClaimResult c;
  c.outcome = Outcome::Claimed;
  c.response = Response{200, "ok", ""};
  HttpReply r = to_http(c);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok");
  EXPECT_EQ(header(r, "Idempotent-Replayed"), "<absent>");
  c.response.reset();
  EXPECT_EQ(to_http(c).status, 500);
}

TEST(Http, ParseHeadersJson) {
  auto h = parse_headers_json(R"( {"A": "x\"y\\z\u00e9\n", "B": true, "C": null, "D": -1.5} )");
  ASSERT_EQ(h.size(), 4u);
  EXPECT_EQ(h[0].first, "A");
  EXPECT_EQ(h[0].second, "x\"y\\z\xc3\xa9\n");
  EXPECT_EQ(h[1].second, "true");
  EXPECT_EQ(h[3].second, "-1.5");
  EXPECT_TRUE(parse_headers_json("").empty());
  EXPECT_TRUE(parse_headers_json("{}").empty());
  try {
    parse_headers_json(R"({"a": {"b": 1}})");
    FAIL() << "nested object accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.sqlstate(), "22P02");
  }
  EXPECT_THROW(parse_headers_json("[1]"), Error);
}

// A header stored as an array (sent more than once, as Node and Python store
// two Set-Cookie lines) is one pair per value, in order; deeper nesting is refused.
TEST(Http, ParseHeadersJsonArraysAreRepeatedHeaders) {
  auto h = parse_headers_json(R"({"Set-Cookie": ["a=1; Path=/", "b=\u00e9"], "X": "y", "Empty": [], "N": [1,true]})");
  ASSERT_EQ(h.size(), 5u);
  EXPECT_EQ(h[0], (std::pair<std::string, std::string>{"Set-Cookie", "a=1; Path=/"}));
  EXPECT_EQ(h[1], (std::pair<std::string, std::string>{"Set-Cookie", "b=\xc3\xa9"}));
  EXPECT_EQ(h[2], (std::pair<std::string, std::string>{"X", "y"}));
  EXPECT_EQ(h[3], (std::pair<std::string, std::string>{"N", "1"}));
  EXPECT_EQ(h[4], (std::pair<std::string, std::string>{"N", "true"}));
  EXPECT_THROW(parse_headers_json(R"({"a": [["x"]]})"), Error);
  EXPECT_THROW(parse_headers_json(R"({"a": [{"b": 1}]})"), Error);
  EXPECT_THROW(parse_headers_json(R"({"a": ["x")"), Error);
}

TEST(Http, JsonQuote) { EXPECT_EQ(json_quote("a\"b\\c\n\x01"), "\"a\\\"b\\\\c\\n\\u0001\""); }

TEST(Http, OutcomeNames) {
  EXPECT_STREQ(to_string(Outcome::Claimed), "claimed");
  EXPECT_STREQ(to_string(Outcome::Replay), "replay");
  EXPECT_STREQ(to_string(Outcome::InProgress), "in_progress");
  EXPECT_STREQ(to_string(Outcome::Mismatch), "mismatch");
}
