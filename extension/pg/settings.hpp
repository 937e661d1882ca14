// The idempotency.* settings (GUCs).
#pragma once

namespace pgi::settings {

// Defines every idempotency.* GUC and reserves the prefix. Called from _PG_init.
void Init();

// Current values. Durations are in the unit of their GUC.
int DefaultTtlSeconds();
int DefaultLeaseMs();
int MaxResponseBytes();
bool SweeperEnabled();
int SweepIntervalMs();
int SweepBatchSize();
int MaxSweepers();
double SweepThrottle();

}  // namespace pgi::settings
