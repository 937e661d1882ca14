// A minimal synchronous Redis Streams client on hiredis for the consumer demo:
// one connection, commands given as argument vectors (binary safe, no format
// strings), replies turned into the few shapes the demo needs.
#pragma once

#include <hiredis/hiredis.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace demo {

// One stream entry: its id and its field/value pairs.
struct StreamEntry {
  std::string id;
  std::vector<std::pair<std::string, std::string>> fields;

  std::string field(const std::string& name) const {
    for (const auto& [k, v] : fields)
      if (k == name) return v;
    return {};
  }
};

struct ReplyDeleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

class Redis {
 public:
  Redis(const std::string& host, int port) : ctx_(redisConnect(host.c_str(), port)) {
    if (ctx_ == nullptr || ctx_->err)
      throw std::runtime_error("redis: cannot connect to " + host + ":" + std::to_string(port) + ": " +
                               (ctx_ ? ctx_->errstr : "out of memory"));
  }
  ~Redis() {
    if (ctx_) redisFree(ctx_);
  }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  // Runs a command; a Redis error reply becomes std::runtime_error.
  Reply command(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(redisCommandArgv(ctx_, static_cast<int>(args.size()), argv.data(), lens.data())));
    if (!r) throw std::runtime_error("redis: " + args[0] + " failed: " + (ctx_->err ? ctx_->errstr : "no reply"));
    if (r->type == REDIS_REPLY_ERROR)
      throw std::runtime_error("redis: " + args[0] + ": " + std::string(r->str, r->len));
    return r;
  }

  long long integer(const std::vector<std::string>& args) {
    Reply r = command(args);
    return r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
  }

  // Entries of a reply shaped [[id, [field, value, ...]], ...].
  static std::vector<StreamEntry> entries(const redisReply* list) {
    std::vector<StreamEntry> out;
    if (list == nullptr || list->type != REDIS_REPLY_ARRAY) return out;
    for (size_t i = 0; i < list->elements; ++i) {
      const redisReply* e = list->element[i];
      // XAUTOCLAIM can name an entry deleted from the stream with a nil body.
      if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[1]->type != REDIS_REPLY_ARRAY) continue;
      StreamEntry entry{std::string(e->element[0]->str, e->element[0]->len), {}};
      const redisReply* kv = e->element[1];
      for (size_t j = 0; j + 1 < kv->elements; j += 2)
        entry.fields.emplace_back(std::string(kv->element[j]->str, kv->element[j]->len),
                                  std::string(kv->element[j + 1]->str, kv->element[j + 1]->len));
      out.push_back(std::move(entry));
    }
    return out;
  }

 private:
  redisContext* ctx_;
};

}  // namespace demo
