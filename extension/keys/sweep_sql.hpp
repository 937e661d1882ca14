// The text of the sweep statement, in every form it takes.
//
// No PostgreSQL headers here: the statement text is unit-tested without a
// server (test/cxx/sweep_sql_test.cpp). store::SweepExpired is the only user.
//
// Every form deletes the same rows: expired ($1 = now) and never an
// in_progress row whose lease is still running, at most $2 of them, oldest
// expiry first.
#pragma once

#include <string>
#include <string_view>

namespace pgi::sweep_sql {

enum class Form {
  // A table whose rows are here: idempotency.keys on a plain server, or one
  // shard of it on a Citus node. Rows are picked with FOR UPDATE SKIP LOCKED,
  // so a row a claim is working on is left alone and the sweep never waits
  // for a claim; deleted by ctid (a TID scan).
  Local,
  // Local, resumed where the caller's last batch ended: only rows with
  // expires_at >= $3 (the latest expiry the last batch deleted; -infinity for
  // the first), and the statement returns one row, (rows deleted, latest
  // expiry among them). Each batch of Local walks the expires_at index from
  // its start, over the entries of every row the batches before it deleted
  // (dead until vacuum): ~5 us per thousand, 5 ms per batch a million rows
  // in. A row left behind (locked by a claim meanwhile) waits for the
  // sweeper's next turn, which starts from -infinity again.
  LocalFrom,
  // idempotency.keys distributed by Citus, swept through the coordinator (or
  // any node with metadata). Citus refuses FOR UPDATE across shards and ctid
  // means nothing across them, so the batch is chosen by primary key: the
  // LIMIT subquery becomes one intermediate result, and the DELETE goes to
  // every shard in the caller's (distributed) transaction. The outer WHERE
  // repeats the condition, so a row a claim took over meanwhile is re-checked
  // after the wait and kept.
  Distributed,
};

// The statement for form; table is a schema-qualified, already quoted name
// (idempotency.keys or a shard such as idempotency.keys_102008). Parameters:
// $1 timestamptz now, $2 bigint limit; LocalFrom also $3 timestamptz from.
std::string Statement(Form form, std::string_view table);

// The name of the table whose rows the statement deletes.
inline constexpr std::string_view kKeysTable = "idempotency.keys";

}  // namespace pgi::sweep_sql
