#include "sweeper/sweep_schedule.hpp"

#include <algorithm>

namespace pgi::sweeper::schedule {

Micros DueAt(const Database& db, Micros interval) {
  if (db.running) return kNever;
  Micros due;
  if (db.woken || db.known == Known::Unknown)
    due = 0;
  else if (db.known == Known::Absent)
    return kNever;
  else
    due = db.backlog ? db.last_turn : db.last_turn + interval;
  return std::max(due, db.not_before);
}

namespace {
// True if a should go before b (both due).
bool Before(const Database& a, const Database& b) {
  if (a.woken != b.woken) return a.woken;
  return a.last_turn < b.last_turn;
}
}  // namespace

int Next(const Database* dbs, int count, Micros now, Micros interval) {
  int best = -1;
  for (int i = 0; i < count; i++) {
    if (DueAt(dbs[i], interval) > now) continue;
    if (best < 0 || Before(dbs[i], dbs[best])) best = i;
  }
  return best;
}

int Waiting(const Database* dbs, int count, Micros now, Micros interval) {
  int waiting = 0;
  for (int i = 0; i < count; i++)
    if (DueAt(dbs[i], interval) <= now) waiting++;
  return waiting;
}

Micros NextDue(const Database* dbs, int count, Micros now, Micros interval) {
  Micros next = kNever;
  for (int i = 0; i < count; i++) {
    const Micros due = DueAt(dbs[i], interval);
    if (due > now) next = std::min(next, due);
  }
  return next;
}

}  // namespace pgi::sweeper::schedule
