// report: what was published, delivered and applied, and the check that
// matters: every business id applied exactly once (effects == distinct ids,
// no id twice in the ledger, none missing, nothing left pending).
#include <libpq-fe.h>

#include <iomanip>
#include <iostream>
#include <set>
#include <string>

#include "consumer.hpp"
#include "redis.hpp"

namespace demo {

namespace {

long long number(PGconn* conn, const char* statement) {
  PGresult* r = PQexec(conn, statement);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    std::string message = PQresultErrorMessage(r);
    PQclear(r);
    throw std::runtime_error(message);
  }
  const long long n = PQgetisnull(r, 0, 0) ? 0 : std::stoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return n;
}

void line(const std::string& label, long long value, const std::string& note = {}) {
  std::cout << "  " << std::left << std::setw(44) << label << std::right << std::setw(7) << value
            << (note.empty() ? "" : "   " + note) << "\n";
}

}  // namespace

int report(const Options& o) {
  Redis redis(o.redis_host, o.redis_port);
  // Everything published: walk the stream.
  long long published = 0;
  std::set<std::string> ids;
  std::string start = "-";
  for (;;) {
    Reply r = redis.command({"XRANGE", o.stream, start, "+", "COUNT", "1000"});
    const auto entries = Redis::entries(r.get());
    if (entries.empty()) break;
    for (const auto& e : entries) {
      ++published;
      ids.insert(e.field("id"));
    }
    start = "(" + entries.back().id;
  }
  Reply pending_reply = redis.command({"XPENDING", o.stream, o.group});
  const long long pending = pending_reply->element[0]->integer;

  PGconn* conn = PQconnectdb(o.db.c_str());
  if (PQstatus(conn) != CONNECTION_OK) {
    std::cerr << "report: cannot connect: " << PQerrorMessage(conn);
    PQfinish(conn);
    return 1;
  }
  const long long deliveries = number(conn, "SELECT count(*) FROM demo.deliveries");
  const long long entries_delivered = number(conn, "SELECT count(DISTINCT stream_id) FROM demo.deliveries");
  const long long taken_over = number(conn, "SELECT count(*) FROM demo.deliveries WHERE redelivery");
  const long long applied = number(conn, "SELECT count(*) FROM demo.deliveries WHERE outcome = 'applied'");
  const long long duplicate = number(conn, "SELECT count(*) FROM demo.deliveries WHERE outcome = 'duplicate'");
  const long long held = number(conn, "SELECT count(*) FROM demo.deliveries WHERE outcome = 'held'");
  const long long interrupted = number(conn, "SELECT count(*) FROM demo.deliveries WHERE outcome IS NULL");
  // A delivery answered false for a stream entry that an earlier delivery had
  // already applied: the consumer died after COMMIT and before XACK.
  const long long after_commit = number(conn,
                                        "SELECT count(*) FROM demo.deliveries d WHERE d.outcome = 'duplicate'"
                                        " AND EXISTS (SELECT 1 FROM demo.deliveries e WHERE e.stream_id = d.stream_id"
                                        " AND e.delivery < d.delivery AND e.outcome = 'applied')");
  const long long effects = number(conn, "SELECT count(*) FROM demo.ledger");
  const long long effect_ids = number(conn, "SELECT count(DISTINCT business_id) FROM demo.ledger");
  const long long twice_in_ledger = number(
      conn, "SELECT count(*) FROM (SELECT business_id FROM demo.ledger GROUP BY business_id HAVING count(*) > 1) d");
  const long long keys =
      number(conn, "SELECT count(*) FROM idempotency.keys WHERE scope = 'consumer:payments' AND state = 'completed'");
  std::set<std::string> in_ledger;
  PGresult* r = PQexec(conn, "SELECT DISTINCT business_id FROM demo.ledger");
  for (int i = 0; i < PQntuples(r); ++i) in_ledger.insert(PQgetvalue(r, i, 0));
  PQclear(r);
  PQfinish(conn);
  long long missing = 0;
  for (const auto& id : ids) missing += in_ledger.count(id) == 0;
  const long long distinct = static_cast<long long>(ids.size());

  std::cout << "\n== Redis Streams consumer report ==\n";
  line("messages published", published, std::to_string(published - distinct) + " published twice by the producer");
  line("distinct business ids", distinct);
  line("deliveries (including redeliveries)", deliveries);
  line("  redelivered after a crash", taken_over,
       "XAUTOCLAIM by another consumer, or the restarted one's own pending list");
  line("  once() = true: effect applied", applied);
  line("  once() = false: already applied, skipped", duplicate,
       std::to_string(after_commit) + " of them redelivered after a COMMIT whose XACK never came");
  line("  55P03: held by another consumer, not acked", held);
  line("  killed before its COMMIT (rolled back)", interrupted);
  line("effects applied (rows in demo.ledger)", effects);
  line("  business ids in the ledger", effect_ids);
  line("  ids applied more than once", twice_in_ledger);
  line("  published ids never applied", missing);
  line("completed keys in scope consumer:payments", keys);
  line("entries still pending in the group", pending);
  std::cout << "REPORT published=" << published << " distinct=" << distinct << " deliveries=" << deliveries
            << " redeliveries=" << taken_over << " entries_delivered=" << entries_delivered
            << " after_commit=" << after_commit << " interrupted=" << interrupted << " effects=" << effects
            << " duplicates_in_ledger=" << twice_in_ledger << " missing=" << missing << " pending=" << pending << "\n";
  const bool ok = effects == distinct && twice_in_ledger == 0 && missing == 0 && pending == 0 && keys == distinct;
  std::cout << (ok ? "OK: every payment applied exactly once (effects == distinct business ids)\n"
                   : "FAILED: effects != distinct business ids, or duplicates, missing or pending entries\n");
  return ok ? 0 : 1;
}

}  // namespace demo
