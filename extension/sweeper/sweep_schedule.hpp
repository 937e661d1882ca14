// Which database the sweeper launcher hands its next worker to: a pure
// function of what the launcher knows, free of PostgreSQL headers so that
// GoogleTest covers it without a server (test/cxx/sweep_schedule_test.cpp).
//
// The rules, and why they bound the time between two turns of a database:
// * A turn sweeps one database for at most TurnBudget(interval) =
//   sweep_interval / 2 while another database waits for a worker (longer
//   only while nobody waits), then the worker exits.
// * A database with the extension is due sweep_interval after its last turn
//   started, or at once when that turn stopped with expired keys left
//   (a backlog). Databases not yet looked at are due at once; those known
//   to lack the extension never (the launcher re-probes them itself).
// * Of the due databases, one where CREATE EXTENSION just committed goes
//   first; then the one whose last turn started longest ago. A database that
//   just had a turn therefore waits for every other due database: round
//   robin, no starvation, and a backlog only uses turns nobody else needs.
// With N databases and M workers, each of the at most N turns that may run
// before a database's next one ends within a budget, and M run side by side,
// so that next turn starts within max(sweep_interval, ceil(N / M) x (budget +
// start-up cost)) <= sweep_interval x ceil(N / M) of the last one.
#pragma once

#include <cstdint>

namespace pgi::sweeper::schedule {

using Micros = std::int64_t;

enum class Known { Unknown, Absent, Present };

struct Database {
  Known known = Known::Unknown;
  bool running = false;
  bool woken = false;    // CREATE EXTENSION committed there since its last turn started
  bool backlog = false;  // its last turn stopped with expired keys left
  Micros last_turn = 0;  // start of its last turn; 0 = never
  Micros not_before = 0; // held for a command, or a failed turn's retry time
};

// When db is next due; kNever if it is not (running, or without the extension).
constexpr Micros kNever = INT64_MAX;
Micros DueAt(const Database& db, Micros interval);

// Index of the database to start a worker for now, or -1 if none is due.
int Next(const Database* dbs, int count, Micros now, Micros interval);

// How many databases are due now and not running.
int Waiting(const Database* dbs, int count, Micros now, Micros interval);

// The earliest due time after now (kNever if none), for the launcher's sleep.
Micros NextDue(const Database* dbs, int count, Micros now, Micros interval);

// How long a turn may sweep while another database waits for a worker.
inline Micros TurnBudget(Micros interval) { return interval / 2; }

}  // namespace pgi::sweeper::schedule
