// The C++ client of pg_idempotency: libpq, prepared statements, binary
// parameters and results.
#include "idempotency/client.hpp"

#include <libpq-fe.h>

#include <cstring>
#include <memory>

#include "observed_call.hpp"

namespace idempotency {

namespace {

// Type OIDs (fixed in PostgreSQL's catalog).
constexpr Oid kBytea = 17, kInt8 = 20, kInt4 = 23, kText = 25, kJsonb = 3802, kInterval = 1186;

struct Statement {
  const char* name;
  const char* sql;
  int nparams;
  Oid types[7];
  // The text sent as an unnamed statement (pooler mode), when it differs.
  const char* unnamed_sql = nullptr;
  const char* text(bool unnamed) const { return unnamed && unnamed_sql != nullptr ? unnamed_sql : sql; }
};

// Result columns are plain types (the enums as text) so that the cached plans
// keep their result types even if the extension is dropped and created again.
constexpr const char* kClaimColumns =
    "SELECT c.outcome::text, c.token, c.attempt, c.recovery_point, c.response_status, "
    "c.response_headers, c.response_body, c.expires_at, c.locked_until FROM ";

// 1.2: a claim that passes ClaimOptions::trace_context (and reads back claim_result.trace_context) uses
// the *Traced statements; every other claim keeps the six-argument ones, which 1.0 and 1.1 serve too.
constexpr const char* kClaimTracedColumns =
    "SELECT c.outcome::text, c.token, c.attempt, c.recovery_point, c.response_status, "
    "c.response_headers, c.response_body, c.expires_at, c.locked_until, c.trace_context FROM ";

// kCount: the statements prepared as one unit (below). The traced claims come
// after it and always run unnamed: preparing them needs a database at 1.2, and
// the unit must prepare on 1.0 and 1.1 databases too.
enum StatementId {
  kClaim, kClaimJson, kFinish, kCheckpoint, kRelease, kLookup, kSweep, kFingerprint, kOnce, kCount,
  kClaimTraced = kCount, kClaimJsonTraced, kStatementCount
};

bool always_unnamed(StatementId id) { return id >= kCount; }

// The named statements are prepared as one unit: all of them, in one pipeline
// (one Sync) or one transaction, so that a transaction pooler cannot split
// them across server connections. Every server connection then holds all of
// them or none, whichever client prepared them. This is what keeps a request
// from failing behind a pooler with the default options: a transaction whose
// first statement (claim, once) ran named has every other statement it needs
// on the same server connection (finish after the handler cannot meet 26000),
// and a server connection without them fails the first statement, before any
// handler ran, where execute() and once() can start over in pooler mode. When
// statements were prepared one at a time, a Client whose first claim was a
// replay left claim without finish on a server connection; another Client's
// transaction that landed there claimed, ran its handler and then failed at
// finish (26000, or 42P05 when it prepared finish itself), after the handler,
// where nothing can be retried.
// The prefix is v2 since v1 names were prepared one at a time by earlier
// releases: a server connection may hold some of them, never all or none.
constexpr unsigned kAllStatements = (1u << kCount) - 1;

const std::string& claim_sql(bool json) {
  static const std::string plain = std::string(kClaimColumns) + "idempotency.claim($1, $2, $3, $4, $5, $6) AS c";
  static const std::string with_json =
      std::string(kClaimColumns) + "idempotency.claim($1, $2, idempotency.fingerprint($3), $4, $5, $6) AS c";
  return json ? with_json : plain;
}

// Pooler mode parses every call afresh, and "SELECT f(...)" returning the
// composite as one column parses and plans in about half the server CPU of
// "SELECT c.* FROM f(...) AS c" (measured: ~25 against ~55 us per claim). An
// unnamed statement has no cached plan whose result type could go stale.
const std::string& claim_record_sql(bool json) {
  static const std::string plain = "SELECT idempotency.claim($1, $2, $3, $4, $5, $6)";
  static const std::string with_json = "SELECT idempotency.claim($1, $2, idempotency.fingerprint($3), $4, $5, $6)";
  return json ? with_json : plain;
}

const std::string& claim_traced_sql(bool json, bool record) {
  static const std::string plain = std::string(kClaimTracedColumns) + "idempotency.claim($1, $2, $3, $4, $5, $6, $7) AS c";
  static const std::string with_json = std::string(kClaimTracedColumns) +
                                       "idempotency.claim($1, $2, idempotency.fingerprint($3), $4, $5, $6, $7) AS c";
  static const std::string plain_record = "SELECT idempotency.claim($1, $2, $3, $4, $5, $6, $7)";
  static const std::string json_record = "SELECT idempotency.claim($1, $2, idempotency.fingerprint($3), $4, $5, $6, $7)";
  return record ? (json ? json_record : plain_record) : (json ? with_json : plain);
}

const Statement& statement(StatementId id) {
  static const Statement table[kStatementCount] = {
      {"idempotency_v2_claim",
       claim_sql(false).c_str(),
       6,
       {kText, kText, kBytea, kInterval, kInterval, kInterval},
       claim_record_sql(false).c_str()},
      {"idempotency_v2_claim_json",
       claim_sql(true).c_str(),
       6,
       {kText, kText, kJsonb, kInterval, kInterval, kInterval},
       claim_record_sql(true).c_str()},
      {"idempotency_v2_finish",
       "SELECT idempotency.finish($1, $2, $3, $4, $5, $6)",
       6,
       {kText, kText, kInt8, kInt4, kBytea, kJsonb}},
      {"idempotency_v2_checkpoint",
       "SELECT idempotency.checkpoint($1, $2, $3, $4, $5)",
       5,
       {kText, kText, kInt8, kText, kInterval}},
      {"idempotency_v2_release", "SELECT idempotency.release($1, $2, $3)", 3, {kText, kText, kInt8}},
      {"idempotency_v2_lookup",
       "SELECT k.scope, k.key, k.fingerprint, k.state::text, k.token, k.attempt, k.recovery_point, "
       "k.locked_until, k.created_at, k.completed_at, k.expires_at, k.response_status, "
       "k.response_headers, k.response_body FROM idempotency.lookup($1, $2) AS k",
       2,
       {kText, kText}},
      {"idempotency_v2_sweep", "SELECT idempotency.sweep($1)", 1, {kInt4}},
      {"idempotency_v2_fingerprint", "SELECT idempotency.fingerprint($1)", 1, {kJsonb}},
      {"idempotency_v2_once", "SELECT idempotency.once($1, $2, $3, $4)", 4, {kText, kText, kInterval, kInterval}},
      {"idempotency_v2_claim_traced",
       claim_traced_sql(false, false).c_str(),
       7,
       {kText, kText, kBytea, kInterval, kInterval, kInterval, kText},
       claim_traced_sql(false, true).c_str()},
      {"idempotency_v2_claim_json_traced",
       claim_traced_sql(true, false).c_str(),
       7,
       {kText, kText, kJsonb, kInterval, kInterval, kInterval, kText},
       claim_traced_sql(true, true).c_str()},
  };
  return table[id];
}

struct ResultDeleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

[[noreturn]] void throw_from(PGconn* conn, const PGresult* res, const char* what) {
  std::string message;
  if (res != nullptr) {
    // "primary. DETAIL: ... HINT: ..." without libpq's "ERROR:  " prefix.
    if (const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)) {
      message = primary;
      if (const char* detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL))
        message += std::string(" DETAIL: ") + detail;
      if (const char* hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT)) message += std::string(" HINT: ") + hint;
    } else {
      message = trim(PQresultErrorMessage(res));
    }
  }
  if (message.empty() && conn != nullptr) message = trim(PQerrorMessage(conn));
  if (message.empty()) message = std::string(what) + " failed";
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  // A connection that is gone is reported as such, whatever the last result said.
  if (conn == nullptr || PQstatus(conn) == CONNECTION_BAD) {
    throw Error("08006", "idempotency: connection lost during " + std::string(what) + ": " + message);
  }
  throw Error(state != nullptr && *state != '\0' ? state : "XX000", message);
}

// ---- binary encoding -------------------------------------------------------
void put_be(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t get_be(const char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
constexpr std::int64_t kPgEpochUnixSeconds = 946684800;

TimePoint decode_timestamptz(const char* p) {
  auto us = static_cast<std::int64_t>(get_be(p, 8));
  if (us == INT64_MAX) return TimePoint::max();
  if (us == INT64_MIN) return TimePoint::min();
  auto since_unix = std::chrono::microseconds(us) + std::chrono::seconds(kPgEpochUnixSeconds);
  return TimePoint(std::chrono::duration_cast<Clock::duration>(since_unix));
}

// Parameters, all sent in binary format.
class Params {
 public:
  explicit Params(int n) : values_(n), present_(n, false) {}
  void text(int i, std::string_view s) { set(i, std::string(s)); }
  void bytes(int i, const std::optional<std::string>& s) {
    if (s) set(i, *s);
  }
  void int8(int i, std::int64_t v) {
    std::string b;
    put_be(b, static_cast<std::uint64_t>(v), 8);
    set(i, std::move(b));
  }
  void int4(int i, std::int32_t v) {
    std::string b;
    put_be(b, static_cast<std::uint32_t>(v), 4);
    set(i, std::move(b));
  }
  void jsonb(int i, std::string_view json) {
    std::string b(1, '\x01');  // jsonb binary format version
    b.append(json);
    set(i, std::move(b));
  }
  void interval(int i, std::optional<std::chrono::milliseconds> ms) {
    if (!ms) return;
    std::string b;
    auto us = std::chrono::duration_cast<std::chrono::microseconds>(*ms).count();
    put_be(b, static_cast<std::uint64_t>(us), 8);  // time
    put_be(b, 0, 4);                               // days
    put_be(b, 0, 4);                               // months
    set(i, std::move(b));
  }

  // Runs s: the named statement prepared earlier, or (name == nullptr) s.sql as
  // the unnamed statement, parsed, bound and executed in one round trip.
  PGresult* exec(PGconn* conn, const Statement& s, bool unnamed) {
    pack();
    if (unnamed) {
      return PQexecParams(conn, s.text(true), count(), s.types, v_.data(), len_.data(), fmt_.data(), 1);
    }
    return PQexecPrepared(conn, s.name, count(), v_.data(), len_.data(), fmt_.data(), 1);
  }
#ifdef LIBPQ_HAS_PIPELINING
  // The same, queued in pipeline mode.
  int send(PGconn* conn, const Statement& s, bool unnamed) {
    pack();
    if (unnamed) {
      return PQsendQueryParams(conn, s.text(true), count(), s.types, v_.data(), len_.data(), fmt_.data(), 1);
    }
    return PQsendQueryPrepared(conn, s.name, count(), v_.data(), len_.data(), fmt_.data(), 1);
  }
#endif

 private:
  void set(int i, std::string v) {
    values_[i] = std::move(v);
    present_[i] = true;
  }
  int count() const { return static_cast<int>(values_.size()); }
  void pack() {
    const int n = count();
    v_.assign(n, nullptr);
    len_.assign(n, 0);
    fmt_.assign(n, 1);
    for (int i = 0; i < n; ++i) {
      v_[i] = present_[i] ? values_[i].data() : nullptr;
      len_[i] = static_cast<int>(values_[i].size());
    }
  }
  std::vector<std::string> values_;
  std::vector<bool> present_;
  std::vector<const char*> v_;
  std::vector<int> len_, fmt_;
};

// ---- binary decoding of one result row ---------------------------------------
// One field of a composite value in binary format.
struct Field {
  const char* data = nullptr;
  int length = -1;  // -1: NULL
};

// A composite value in binary format (record_send): int32 number of fields,
// then per field its type OID, int32 length (-1 = NULL) and the bytes.
// A later version may add fields at the end (claim_result, 1.2): at least `expected`.
std::vector<Field> parse_record(const char* p, int len, int expected) {
  auto bad = [] { return Error("XX000", "idempotency: malformed composite result (extension version mismatch?)"); };
  if (len < 4) throw bad();
  const int n = static_cast<int>(get_be(p, 4));
  if (n < expected) throw bad();
  std::vector<Field> out(n);
  int at = 4;
  for (int i = 0; i < n; ++i) {
    if (len - at < 8) throw bad();
    const int flen = static_cast<std::int32_t>(get_be(p + at + 4, 4));
    at += 8;
    if (flen >= 0) {
      if (len - at < flen) throw bad();
      out[i] = Field{p + at, flen};
      at += flen;
    }
  }
  return out;
}

// One result row: the columns of res's row, or (fields set) the fields of
// one composite column.
struct Row {
  const PGresult* res;
  int row;
  const std::vector<Field>* fields = nullptr;
  bool null(int c) const { return fields ? (*fields)[c].length < 0 : PQgetisnull(res, row, c) != 0; }
  const char* data(int c) const { return fields ? (*fields)[c].data : PQgetvalue(res, row, c); }
  int length(int c) const { return fields ? (*fields)[c].length : PQgetlength(res, row, c); }
  std::string bytes(int c) const { return null(c) ? std::string() : std::string(data(c), length(c)); }
  std::optional<std::string> opt_bytes(int c) const {
    if (null(c)) return std::nullopt;
    return bytes(c);
  }
  // Binary values of a fixed width; anything else means the SQL types are not
  // the ones in the contract.
  const char* fixed(int c, int width) const {
    if (length(c) != width) {
      throw Error("XX000", std::string("idempotency: result column ") +
                               (fields ? std::to_string(c + 1) : std::string(PQfname(res, c))) + " has " +
                               std::to_string(length(c)) + " bytes, expected " + std::to_string(width) +
                               " (extension version mismatch?)");
    }
    return data(c);
  }
  std::int64_t int8(int c) const { return static_cast<std::int64_t>(get_be(fixed(c, 8), 8)); }
  std::int32_t int4(int c) const { return static_cast<std::int32_t>(get_be(fixed(c, 4), 4)); }
  bool boolean(int c) const { return !null(c) && fixed(c, 1)[0] != 0; }
  std::optional<TimePoint> time(int c) const {
    if (null(c)) return std::nullopt;
    return decode_timestamptz(fixed(c, 8));
  }
  std::string jsonb(int c) const {  // version byte, then the text
    if (null(c) || length(c) < 1) return std::string();
    return std::string(data(c) + 1, length(c) - 1);
  }
};

Outcome parse_outcome(const std::string& s) {
  if (s == "claimed") return Outcome::Claimed;
  if (s == "replay") return Outcome::Replay;
  if (s == "in_progress") return Outcome::InProgress;
  if (s == "mismatch") return Outcome::Mismatch;
  throw Error("XX000", "idempotency: unknown claim outcome '" + s + "'");
}

// A named statement of ours is missing (26000) or already there (42P05) on the
// server connection: the sign of a transaction pooler (or of DISCARD ALL).
// execute() may start over after it when nothing else has run; to the caller
// it is an ordinary Error with the server's SQLSTATE.
class StatementsLost : public Error {
 public:
  using Error::Error;
};

bool statements_lost(const PGresult* r) {
  if (r == nullptr || PQresultStatus(r) != PGRES_FATAL_ERROR) return false;
  const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  return state != nullptr && (std::strcmp(state, "26000") == 0 || std::strcmp(state, "42P05") == 0);
}

}  // namespace

// Private helpers with access to Client's members.
struct Detail {
  static void ensure_open(Client& c, const char* what) {
    if (c.conn_ == nullptr) throw Error("08003", std::string("idempotency: ") + what + " on a moved-from Client");
    if (PQstatus(c.conn_) == CONNECTION_BAD) {
      throw Error("08006",
                  std::string("idempotency: connection lost before ") + what + ": " + trim(PQerrorMessage(c.conn_)));
    }
  }

  // Whether execute()/once() run their own BEGIN ... COMMIT (no transaction
  // open) or join the caller's under a savepoint; refuses a failed, busy or
  // lost connection. what: "execute()" or "once()".
  static bool owns_transaction(Client& c, const char* what) {
    ensure_open(c, what);
    switch (PQtransactionStatus(c.conn_)) {
      case PQTRANS_IDLE:
        return true;
      case PQTRANS_INTRANS:
        return false;
      case PQTRANS_INERROR:
        throw Error("25P02", std::string("idempotency: ") + what +
                                 " on a connection whose transaction has failed; roll it back first");
      case PQTRANS_ACTIVE:
        throw Error("25000",
                    std::string("idempotency: ") + what + " while a command is still in progress on the connection");
      default:
        throw Error("08006", std::string("idempotency: connection lost before ") + what);
    }
  }

  // Borrowed connection: another Client may already have prepared our
  // statements on it; preparing a name twice would fail the caller's
  // transaction. Looked up once per Client.
  static void check_existing(Client& c) {
    if (c.owned_ || c.checked_existing_) return;
    Result r(PQexecParams(c.conn_,
                          "SELECT name FROM pg_catalog.pg_prepared_statements "
                          "WHERE name LIKE 'idempotency\\_v2\\_%'",
                          0, nullptr, nullptr, nullptr, nullptr, 0));
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) throw_from(c.conn_, r.get(), "prepare");
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      const char* name = PQgetvalue(r.get(), i, 0);
      for (int s = 0; s < kCount; ++s) {
        if (std::strcmp(name, statement(static_cast<StatementId>(s)).name) == 0) c.prepared_ |= 1u << s;
      }
    }
    c.checked_existing_ = true;
  }

  // Prepares every statement not prepared yet, as one unit (see
  // kAllStatements); returns the first failed result, or null. On an idle
  // connection the unit is one pipeline behind one Sync (or, without
  // pipelining, BEGIN ... COMMIT): a transaction pooler hands a server
  // connection back only at a Sync that finds no transaction open, so it
  // cannot split the unit. Inside a transaction the transaction holds it.
  static Result prepare_unit(Client& c, const char* what) {
    check_existing(c);
    if (c.prepared_ == kAllStatements) return nullptr;
#ifdef LIBPQ_HAS_PIPELINING
    if (can_pipeline(c)) {
      if (PQenterPipelineMode(c.conn_) != 1) throw_from(c.conn_, nullptr, what);
      PipelineScope scope{c.conn_};
      int ids[kCount];
      int n = 0;
      for (int i = 0; i < kCount; ++i) {
        if (c.prepared_ & (1u << i)) continue;
        const Statement& s = statement(static_cast<StatementId>(i));
        if (PQsendPrepare(c.conn_, s.name, s.sql, s.nparams, s.types) != 1) throw_from(c.conn_, nullptr, what);
        ids[n++] = i;
      }
      if (PQpipelineSync(c.conn_) != 1) throw_from(c.conn_, nullptr, what);
      scope.sync_sent = true;
      Result failed;
      for (int k = 0; k < n; ++k) {
        Result r(PQgetResult(c.conn_));
        if (!r) throw_from(c.conn_, nullptr, what);                     // the connection broke
        while (PGresult* extra = PQgetResult(c.conn_)) PQclear(extra);  // the NULL that ends each query
        const ExecStatusType st = PQresultStatus(r.get());
        if (st == PGRES_COMMAND_OK) {
          c.prepared_ |= 1u << ids[k];
        } else if (st != PGRES_PIPELINE_ABORTED && !failed) {
          failed = std::move(r);
        }
      }
      Result sync(PQgetResult(c.conn_));
      if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) throw_from(c.conn_, sync.get(), what);
      scope.synced = true;
      if (PQexitPipelineMode(c.conn_) != 1) throw_from(c.conn_, nullptr, what);
      return failed;
    }
#endif
    const bool idle = PQtransactionStatus(c.conn_) == PQTRANS_IDLE;
    if (idle) exec_simple(c, "BEGIN");
    Result failed;
    for (int i = 0; i < kCount && !failed; ++i) {
      if (c.prepared_ & (1u << i)) continue;
      const Statement& s = statement(static_cast<StatementId>(i));
      Result r(PQprepare(c.conn_, s.name, s.sql, s.nparams, s.types));
      if (!r) throw_from(c.conn_, nullptr, what);
      if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) {
        c.prepared_ |= 1u << i;
      } else {
        failed = std::move(r);
      }
    }
    if (idle && failed) {
      PQclear(PQexec(c.conn_, "ROLLBACK"));  // back to idle: the caller sees only the failure
    } else if (idle) {
      exec_simple(c, "COMMIT");
    }
    return failed;
  }

  // Our named statements are not (or not only) where we left them: forget
  // them, and with detect_pooler go over to unnamed statements for good.
  static void forget_statements(Client& c) {
    c.prepared_ = 0;
    c.checked_existing_ = false;
    if (c.options_.detect_pooler) c.options_.pooler = true;
  }

  [[noreturn]] static void throw_lost(Client& c, const PGresult* r, const char* what) {
    std::string message = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                              ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY)
                              : trim(PQresultErrorMessage(r));
    message += " (idempotency: during " + std::string(what) +
               "; behind a transaction pooler construct the Client with ClientOptions::pooler = true)";
    (void)c;
    throw StatementsLost(PQresultErrorField(r, PG_DIAG_SQLSTATE), message);
  }

  static void check_row(Client& c, const Result& r, const char* what) {
    if (!r || PQresultStatus(r.get()) != PGRES_TUPLES_OK) throw_from(c.conn_, r.get(), what);
    if (PQntuples(r.get()) != 1) throw Error("XX000", std::string("idempotency: ") + what + " returned no row");
  }

  static Result run(Client& c, StatementId id, Params& p, const char* what) {
    return detail::observed_call(c.options_.observer.get(), what, c.conn_, [&] { return run_unobserved(c, id, p, what); });
  }
  static Result run_unobserved(Client& c, StatementId id, Params& p, const char* what) {
    ensure_open(c, what);
    if (!c.options_.pooler && !always_unnamed(id)) {
      // Outside a transaction block a failed statement changed nothing.
      const bool idle = PQtransactionStatus(c.conn_) == PQTRANS_IDLE;
      Result r = prepare_unit(c, what);
      if (!r) r.reset(p.exec(c.conn_, statement(id), false));
      if (r && PQresultStatus(r.get()) == PGRES_TUPLES_OK) {
        check_row(c, r, what);
        return r;
      }
      if (!statements_lost(r.get()) || PQstatus(c.conn_) != CONNECTION_OK) throw_from(c.conn_, r.get(), what);
      forget_statements(c);
      if (!idle) throw_lost(c, r.get(), what);
      if (!c.options_.pooler) {  // DISCARD ALL / DEALLOCATE ALL on a direct connection: prepare again
        r = prepare_unit(c, what);
        if (!r) r.reset(p.exec(c.conn_, statement(id), false));
        check_row(c, r, what);
        return r;
      }
    }
    Result r(p.exec(c.conn_, statement(id), true));
    check_row(c, r, what);
    return r;
  }

  static void check_command(Client& c, const Result& r, const char* sql) {
    if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK) throw_from(c.conn_, r.get(), sql);
    // COMMIT of a transaction that failed reports ROLLBACK instead of an error.
    if (std::strcmp(sql, "COMMIT") == 0 && std::strcmp(PQcmdStatus(r.get()), "ROLLBACK") == 0) {
      throw Error("25P02", "idempotency: the transaction had failed and was rolled back at COMMIT");
    }
  }

  static void exec_simple(Client& c, const char* sql) {
    ensure_open(c, sql);
    Result r(PQexec(c.conn_, sql));
    check_command(c, r, sql);
  }

  static bool can_pipeline(Client& c) {
#ifdef LIBPQ_HAS_PIPELINING
    return c.options_.pipeline && c.conn_ != nullptr && PQpipelineStatus(c.conn_) == PQ_PIPELINE_OFF;
#else
    (void)c;
    return false;
#endif
  }

#ifdef LIBPQ_HAS_PIPELINING
  // Leaves pipeline mode on every path, reading whatever results are left.
  struct PipelineScope {
    PGconn* conn;
    bool sync_sent = false;  // without a Sync the server sends nothing back: reading would block
    bool synced = false;
    ~PipelineScope() {
      if (PQpipelineStatus(conn) == PQ_PIPELINE_OFF) return;
      if (!sync_sent && PQstatus(conn) == CONNECTION_OK) sync_sent = PQpipelineSync(conn) == 1;
      for (int guard = 0; sync_sent && !synced && guard < 64 && PQstatus(conn) == CONNECTION_OK; ++guard) {
        PGresult* r = PQgetResult(conn);
        if (r != nullptr && PQresultStatus(r) == PGRES_PIPELINE_SYNC) synced = true;
        PQclear(r);
      }
      PQexitPipelineMode(conn);
    }
  };

  // One round trip: `before` (a command, may be null), the statements not yet
  // prepared (named mode; the whole unit, see kAllStatements), statement id,
  // `after` (a command, may be null) queued in pipeline mode behind one Sync,
  // so the server runs them back to back. A failure skips the rest up to the Sync, as
  // in a transaction; the first failure is thrown (StatementsLost for one of
  // our named statements), otherwise the statement's one-row result returned.
  static Result pipelined(Client& c, const char* before, StatementId id, Params& p, const char* after,
                          const char* what) {
    return detail::observed_call(c.options_.observer.get(), what, c.conn_,
                                 [&] { return pipelined_unobserved(c, before, id, p, after, what); });
  }
  static Result pipelined_unobserved(Client& c, const char* before, StatementId id, Params& p, const char* after,
                                     const char* what) {
    ensure_open(c, what);
    const bool unnamed = c.options_.pooler || always_unnamed(id);
    const Statement& s = statement(id);
    unsigned to_prepare = 0;
    if (!unnamed) {
      check_existing(c);
      to_prepare = kAllStatements & ~c.prepared_;
    }
    if (PQenterPipelineMode(c.conn_) != 1) throw_from(c.conn_, nullptr, what);
    PipelineScope scope{c.conn_};
    enum Step { kBefore, kPrepare, kStatement, kAfter };
    Step steps[kCount + 3];
    int prepares[kCount + 3] = {};  // kPrepare steps: which statement
    int n = 0;
    bool sent = true;
    if (before != nullptr) {
      sent = sent && PQsendQueryParams(c.conn_, before, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
      steps[n++] = kBefore;
    }
    for (int i = 0; i < kCount; ++i) {
      if ((to_prepare & (1u << i)) == 0) continue;
      const Statement& u = statement(static_cast<StatementId>(i));
      sent = sent && PQsendPrepare(c.conn_, u.name, u.sql, u.nparams, u.types) == 1;
      prepares[n] = i;
      steps[n++] = kPrepare;
    }
    sent = sent && p.send(c.conn_, s, unnamed) == 1;
    steps[n++] = kStatement;
    if (after != nullptr) {
      sent = sent && PQsendQueryParams(c.conn_, after, 0, nullptr, nullptr, nullptr, nullptr, 0) == 1;
      steps[n++] = kAfter;
    }
    if (!sent) throw_from(c.conn_, nullptr, what);
    if (PQpipelineSync(c.conn_) != 1) throw_from(c.conn_, nullptr, what);
    scope.sync_sent = true;

    Result out, failed;
    Step failed_step = kBefore;
    unsigned prepared = 0;
    bool commit_rolled_back = false;
    for (int i = 0; i < n; ++i) {
      Result r(PQgetResult(c.conn_));
      if (!r) throw_from(c.conn_, nullptr, what);                     // the connection broke
      while (PGresult* extra = PQgetResult(c.conn_)) PQclear(extra);  // the NULL that ends each query
      const ExecStatusType st = PQresultStatus(r.get());
      if (st == PGRES_PIPELINE_ABORTED) continue;
      if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
        if (!failed) {
          failed = std::move(r);
          failed_step = steps[i];
        }
        continue;
      }
      switch (steps[i]) {
        case kPrepare:
          prepared |= 1u << prepares[i];
          break;
        case kStatement:
          out = std::move(r);
          break;
        case kAfter:
          commit_rolled_back = std::strcmp(after, "COMMIT") == 0 && std::strcmp(PQcmdStatus(r.get()), "ROLLBACK") == 0;
          break;
        case kBefore:
          break;
      }
    }
    {
      Result sync(PQgetResult(c.conn_));
      if (!sync || PQresultStatus(sync.get()) != PGRES_PIPELINE_SYNC) throw_from(c.conn_, sync.get(), what);
      scope.synced = true;
    }
    if (PQexitPipelineMode(c.conn_) != 1) throw_from(c.conn_, nullptr, what);
    c.prepared_ |= prepared;
    if (failed) {
      if (!unnamed && (failed_step == kPrepare || failed_step == kStatement) && statements_lost(failed.get()) &&
          PQstatus(c.conn_) == CONNECTION_OK) {
        forget_statements(c);
        throw_lost(c, failed.get(), what);
      }
      throw_from(c.conn_, failed.get(), failed_step == kBefore ? before : failed_step == kAfter ? after : what);
    }
    if (commit_rolled_back) {
      throw Error("25P02", "idempotency: the transaction had failed and was rolled back at COMMIT");
    }
    check_row(c, out, what);
    return out;
  }
#endif

  // Best effort: undo what execute() began; errors here are swallowed since
  // the original exception is what the caller must see.
  static void undo(Client& c, bool own_tx) noexcept {
    if (c.conn_ == nullptr || PQstatus(c.conn_) == CONNECTION_BAD) return;
    if (PQtransactionStatus(c.conn_) == PQTRANS_IDLE) return;
    const char* sql = own_tx ? "ROLLBACK" : "ROLLBACK TO SAVEPOINT idempotency_execute";
    PGresult* r = PQexec(c.conn_, sql);
    PQclear(r);
    if (!own_tx) PQclear(PQexec(c.conn_, "RELEASE SAVEPOINT idempotency_execute"));
  }
};

const char* to_string(Outcome o) noexcept {
  switch (o) {
    case Outcome::Claimed:
      return "claimed";
    case Outcome::Replay:
      return "replay";
    case Outcome::InProgress:
      return "in_progress";
    case Outcome::Mismatch:
      return "mismatch";
  }
  return "unknown";
}

Client::Client(const std::string& conninfo) : Client(conninfo, ClientOptions{}) {}

Client::Client(PGconn* borrowed) : Client(borrowed, ClientOptions{}) {}

Client::Client(const std::string& conninfo, const ClientOptions& options) : owned_(true), options_(options) {
  conn_ = PQconnectdb(conninfo.c_str());
  if (conn_ == nullptr) throw Error("08001", "idempotency: out of memory connecting");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = trim(PQerrorMessage(conn_));
    PQfinish(conn_);
    conn_ = nullptr;
    throw Error("08001", "idempotency: could not connect: " + msg);
  }
}

Client::Client(PGconn* borrowed, const ClientOptions& options) : conn_(borrowed), owned_(false), options_(options) {
  if (borrowed == nullptr) throw Error("08003", "idempotency: Client(PGconn*) given a null connection");
}

Client::~Client() {
  if (owned_ && conn_ != nullptr) PQfinish(conn_);
}

Client::Client(Client&& o) noexcept
    : conn_(o.conn_),
      owned_(o.owned_),
      checked_existing_(o.checked_existing_),
      prepared_(o.prepared_),
      options_(o.options_) {
  o.conn_ = nullptr;
  o.owned_ = false;
}

Client& Client::operator=(Client&& o) noexcept {
  if (this != &o) {
    if (owned_ && conn_ != nullptr) PQfinish(conn_);
    conn_ = o.conn_;
    owned_ = o.owned_;
    checked_existing_ = o.checked_existing_;
    prepared_ = o.prepared_;
    options_ = o.options_;
    o.conn_ = nullptr;
    o.owned_ = false;
  }
  return *this;
}

ClaimResult Client::claim(std::string_view scope, std::string_view key, const ClaimOptions& opt) {
  return claim_impl(scope, key, opt, nullptr);
}

ClaimResult Client::claim_json(std::string_view scope, std::string_view key, std::string_view request_json,
                               const ClaimOptions& opt) {
  return claim_impl(scope, key, opt, &request_json);
}

namespace {

Params claim_params(std::string_view scope, std::string_view key, const ClaimOptions& opt,
                    const std::string_view* request_json) {
  Params p(opt.trace_context ? 7 : 6);
  p.text(0, scope);
  p.text(1, key);
  if (opt.trace_context) p.text(6, *opt.trace_context);
  if (request_json != nullptr) {
    p.jsonb(2, *request_json);
  } else {
    p.bytes(2, opt.fingerprint);
  }
  p.interval(3, opt.ttl);
  p.interval(4, opt.lease);
  p.interval(5, opt.wait.value_or(std::chrono::milliseconds(0)));
  return p;
}

// claim's answer: nine columns (prepared) or one claim_result composite (unnamed);
// ten with the traced statements (1.2: trace_context last).
ClaimResult decode_claim(const PGresult* r, bool traced) {
  const int kFields = traced ? 10 : 9;
  std::vector<Field> fields;
  Row row{r, 0};
  if (PQnfields(r) == 1) {
    if (PQgetisnull(r, 0, 0)) throw Error("XX000", "idempotency: claim returned NULL");
    fields = parse_record(PQgetvalue(r, 0, 0), PQgetlength(r, 0, 0), kFields);
    row.fields = &fields;
  } else if (PQnfields(r) != kFields) {
    throw Error("XX000", "idempotency: claim returned " + std::to_string(PQnfields(r)) + " columns");
  }
  ClaimResult out;
  out.outcome = parse_outcome(row.bytes(0));
  if (!row.null(1)) out.token = row.int8(1);
  if (!row.null(2)) out.attempt = row.int4(2);
  out.recovery_point = row.opt_bytes(3);
  if (!row.null(4)) out.response = Response{row.int4(4), row.bytes(6), row.jsonb(5)};
  out.expires_at = row.time(7);
  out.locked_until = row.time(8);
  if (traced) out.trace_context = row.opt_bytes(9);
  return out;
}

Params finish_params(std::string_view scope, std::string_view key, std::int64_t token, const Response& resp) {
  Params p(6);
  p.text(0, scope);
  p.text(1, key);
  p.int8(2, token);
  p.int4(3, resp.status);
  p.bytes(4, resp.body);
  if (!resp.headers_json.empty()) p.jsonb(5, resp.headers_json);
  return p;
}

}  // namespace

ClaimResult Client::claim_impl(std::string_view scope, std::string_view key, const ClaimOptions& opt,
                               const std::string_view* request_json) {
  Params p = claim_params(scope, key, opt, request_json);
  const bool traced = opt.trace_context.has_value();
  const StatementId id = request_json != nullptr ? (traced ? kClaimJsonTraced : kClaimJson) : (traced ? kClaimTraced : kClaim);
  Result r = Detail::run(*this, id, p, "claim");
  return decode_claim(r.get(), traced);
}

bool Client::finish(std::string_view scope, std::string_view key, std::int64_t token, const Response& resp) {
  Params p = finish_params(scope, key, token, resp);
  Result r = Detail::run(*this, kFinish, p, "finish");
  return Row{r.get(), 0}.boolean(0);
}

TimePoint Client::checkpoint(std::string_view scope, std::string_view key, std::int64_t token,
                             std::string_view recovery_point, std::optional<std::chrono::milliseconds> lease) {
  Params p(5);
  p.text(0, scope);
  p.text(1, key);
  p.int8(2, token);
  p.text(3, recovery_point);
  p.interval(4, lease);
  Result r = Detail::run(*this, kCheckpoint, p, "checkpoint");
  auto t = Row{r.get(), 0}.time(0);
  if (!t) throw Error("XX000", "idempotency: checkpoint returned NULL");
  return *t;
}

bool Client::release(std::string_view scope, std::string_view key, std::int64_t token) {
  Params p(3);
  p.text(0, scope);
  p.text(1, key);
  p.int8(2, token);
  Result r = Detail::run(*this, kRelease, p, "release");
  return Row{r.get(), 0}.boolean(0);
}

std::optional<KeyRecord> Client::lookup(std::string_view scope, std::string_view key) {
  Params p(2);
  p.text(0, scope);
  p.text(1, key);
  Result r = Detail::run(*this, kLookup, p, "lookup");
  Row row{r.get(), 0};
  if (row.null(0)) return std::nullopt;  // lookup() returned NULL: absent or expired
  KeyRecord k;
  k.scope = row.bytes(0);
  k.key = row.bytes(1);
  k.fingerprint = row.opt_bytes(2);
  k.state = row.bytes(3) == "completed" ? KeyState::Completed : KeyState::InProgress;
  k.token = row.null(4) ? 0 : row.int8(4);
  k.attempt = row.null(5) ? 0 : row.int4(5);
  k.recovery_point = row.opt_bytes(6);
  k.locked_until = row.time(7);
  k.created_at = row.time(8);
  k.completed_at = row.time(9);
  k.expires_at = row.time(10);
  if (!row.null(11)) k.response = Response{row.int4(11), row.bytes(13), row.jsonb(12)};
  return k;
}

std::int64_t Client::sweep(std::optional<int> batch_size) {
  Params p(1);
  if (batch_size) p.int4(0, *batch_size);
  Result r = Detail::run(*this, kSweep, p, "sweep");
  Row row{r.get(), 0};
  return row.null(0) ? 0 : row.int8(0);
}

std::string Client::fingerprint(std::string_view request_json) {
  Params p(1);
  p.jsonb(0, request_json);
  Result r = Detail::run(*this, kFingerprint, p, "fingerprint");
  return Row{r.get(), 0}.bytes(0);
}

ClaimResult Client::execute(std::string_view scope, std::string_view key, std::optional<std::string> fingerprint,
                            const Handler& handler) {
  ClaimOptions o;
  o.fingerprint = std::move(fingerprint);
  return execute(scope, key, o, handler);
}

ClaimResult Client::execute(std::string_view scope, std::string_view key, const ClaimOptions& options,
                            const Handler& handler) {
  return execute_impl(scope, key, options, nullptr, handler);
}

ClaimResult Client::execute_json(std::string_view scope, std::string_view key, std::string_view request_json,
                                 const Handler& handler, const ClaimOptions& options) {
  return execute_impl(scope, key, options, &request_json, handler);
}

ClaimResult Client::execute_impl(std::string_view scope, std::string_view key, const ClaimOptions& options,
                                 const std::string_view* request_json, const Handler& handler) {
  const bool own_tx = Detail::owns_transaction(*this, "execute()");
  const char* begin = own_tx ? "BEGIN" : "SAVEPOINT idempotency_execute";
  const char* end = own_tx ? "COMMIT" : "RELEASE SAVEPOINT idempotency_execute";
  const bool traced = options.trace_context.has_value();
  const StatementId claim_id =
      request_json != nullptr ? (traced ? kClaimJsonTraced : kClaimJson) : (traced ? kClaimTraced : kClaim);
  for (int attempt = 0;; ++attempt) {
    // Until the claim has answered, nothing but BEGIN/SAVEPOINT ran: undoing
    // them and starting over cannot run the handler twice.
    bool before_handler = true;
    try {
      Params cp = claim_params(scope, key, options, request_json);
      ClaimResult r;
#ifdef LIBPQ_HAS_PIPELINING
      const bool pipeline = Detail::can_pipeline(*this);
#else
      const bool pipeline = false;
#endif
      if (pipeline) {
#ifdef LIBPQ_HAS_PIPELINING
        r = decode_claim(Detail::pipelined(*this, begin, claim_id, cp, nullptr, "claim").get(), traced);
#endif
      } else {
        Detail::exec_simple(*this, begin);
        r = decode_claim(Detail::run(*this, claim_id, cp, "claim").get(), traced);
      }
      before_handler = false;
      if (r.outcome != Outcome::Claimed) {
        Detail::exec_simple(*this, end);
        return r;
      }
      Response resp = handler(conn_);
      Params fp = finish_params(scope, key, *r.token, resp);
      if (pipeline) {
#ifdef LIBPQ_HAS_PIPELINING
        Detail::pipelined(*this, nullptr, kFinish, fp, end, "finish");
#endif
      } else {
        Detail::run(*this, kFinish, fp, "finish");
        Detail::exec_simple(*this, end);
      }
      r.response = std::move(resp);
      return r;
    } catch (const StatementsLost&) {
      Detail::undo(*this, own_tx);
      // Switched to unnamed statements: start over, once, if nothing ran.
      if (!before_handler || attempt > 0 || !options_.pooler) throw;
    } catch (...) {
      Detail::undo(*this, own_tx);
      throw;
    }
  }
}

bool Client::once(std::string_view scope, std::string_view key, const OnceHandler& handler) {
  return once(scope, key, OnceOptions{}, handler);
}

// The transaction rules of execute(): BEGIN ... COMMIT of its own on an idle
// connection, a savepoint inside the caller's open transaction.
bool Client::once(std::string_view scope, std::string_view key, const OnceOptions& options,
                  const OnceHandler& handler) {
  const bool own_tx = Detail::owns_transaction(*this, "once()");
  const char* begin = own_tx ? "BEGIN" : "SAVEPOINT idempotency_execute";
  for (int attempt = 0;; ++attempt) {
    bool before_handler = true;  // as in execute(): a restart is safe until once() answered
    try {
      Params p(4);
      p.text(0, scope);
      p.text(1, key);
      p.interval(2, options.ttl);
      p.interval(3, options.wait.value_or(std::chrono::milliseconds(0)));
      Result r;
      if (Detail::can_pipeline(*this)) {
#ifdef LIBPQ_HAS_PIPELINING
        r = Detail::pipelined(*this, begin, kOnce, p, nullptr, "once");
#endif
      } else {
        Detail::exec_simple(*this, begin);
        r = Detail::run(*this, kOnce, p, "once");
      }
      before_handler = false;
      const bool first = Row{r.get(), 0}.boolean(0);
      if (first) handler(conn_);
      Detail::exec_simple(*this, own_tx ? "COMMIT" : "RELEASE SAVEPOINT idempotency_execute");
      return first;
    } catch (const StatementsLost&) {
      Detail::undo(*this, own_tx);
      if (!before_handler || attempt > 0 || !options_.pooler) throw;
    } catch (...) {
      Detail::undo(*this, own_tx);
      throw;
    }
  }
}

}  // namespace idempotency
