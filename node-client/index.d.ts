// Type declarations of pg-idempotency (the JavaScript is index.js and lib/).
import type { ClientBase, Pool, PoolClient } from 'pg';
import type { IncomingMessage, ServerResponse } from 'node:http';

/** What claim() found: see the claim table of pg_idempotency's documentation. */
export type Outcome = 'claimed' | 'replay' | 'in_progress' | 'mismatch';

/** A duration: milliseconds, or PostgreSQL interval text such as '24 hours'. */
export type Interval = number | string;

/** Stored headers: one value per header, or an array for a header sent several times (Set-Cookie). */
export type StoredHeaders = Record<string, string | string[]>;

/** A response as finish() stores it and a replay returns it. */
export interface StoredResponse {
  status: number;
  headers: StoredHeaders | null;
  body: Buffer;
}

/** A response to store: the status and optionally the body (bytes or UTF-8 text) and headers. */
export interface Response {
  status: number;
  body?: Buffer | Uint8Array | string | null;
  headers?: StoredHeaders | string | null;
}

/** A pg.Pool, a pg.Client or a client checked out of a pool. */
export type Db = Pool | ClientBase;

export interface ClaimOptions {
  /** The request's digest (at most 64 bytes); NULL: not validated. */
  fingerprint?: Buffer | Uint8Array | null;
  /** A JSON document (text or a value) whose idempotency.fingerprint() is the request's. */
  request?: unknown;
  ttl?: Interval;
  lease?: Interval;
  /** How long to wait for another transaction that holds the key (default 0). */
  wait?: Interval;
  /**
   * A W3C traceparent stored with the key (extension 1.2; null stores none). Given, the result's
   * traceContext is the stored one on a replay or in_progress.
   */
  traceContext?: string | null;
}

export interface ClaimResult {
  outcome: Outcome;
  /** The fencing token when claimed (int8, hence a bigint). */
  token: bigint | null;
  attempt: number | null;
  /** The last checkpoint of a taken-over multi-step operation. */
  recoveryPoint: string | null;
  /** The stored response (replay), or what the execute() handler returned. */
  response: StoredResponse | null;
  expiresAt: Date | null;
  lockedUntil: Date | null;
  /** Only when the claim passed options.traceContext: the traceparent stored with the key. */
  traceContext?: string | null;
}

export interface KeyRecord {
  scope: string;
  key: string;
  fingerprint: Buffer | null;
  state: 'in_progress' | 'completed';
  token: bigint | null;
  attempt: number;
  recoveryPoint: string | null;
  lockedUntil: Date | null;
  createdAt: Date;
  completedAt: Date | null;
  expiresAt: Date;
  response: StoredResponse | null;
}

export interface TransactionOptions {
  /**
   * 'own': BEGIN ... COMMIT; 'savepoint': inside the caller's transaction. Default: what
   * node-postgres reports for the connection (idle: own), always 'own' on a pool.
   */
  transaction?: 'own' | 'savepoint';
}

export interface ExecuteOptions extends ClaimOptions, TransactionOptions {}

export interface OnceOptions extends TransactionOptions {
  ttl?: Interval;
  wait?: Interval;
}

/** The claim that execute() hands its handler. */
export interface HeldClaim extends ClaimResult {
  outcome: 'claimed';
  token: bigint;
}

export function claim(db: Db, scope: string, key: string, options?: ClaimOptions): Promise<ClaimResult>;
export function finish(db: Db, scope: string, key: string, token: bigint | string | number, response: Response): Promise<boolean>;
export function checkpoint(db: Db, scope: string, key: string, token: bigint | string | number, recoveryPoint: string,
  options?: { lease?: Interval }): Promise<Date>;
export function release(db: Db, scope: string, key: string, token: bigint | string | number): Promise<boolean>;
export function lookup(db: Db, scope: string, key: string): Promise<KeyRecord | null>;
export function fingerprint(db: Db, request: unknown): Promise<Buffer>;
export function sweep(db: Db, batchSize?: number | null): Promise<number>;

/** claim -> handler -> finish in one transaction; the stored response on a replay. */
export function execute(db: Db, scope: string, key: string,
  handler: (client: ClientBase, claim: HeldClaim) => Response | Promise<Response>,
  options?: ExecuteOptions): Promise<ClaimResult>;

/** true: the handler ran and the key was recorded in its transaction; false: already processed. */
export function once(db: Db, scope: string, key: string,
  handler: (client: ClientBase) => unknown | Promise<unknown>, options?: OnceOptions): Promise<boolean>;

/** Every failure of a call: the SQLSTATE of its cause (IK001, IK002, 55P03, 22023, 08006, ...). */
export class IdempotencyError extends Error {
  constructor(sqlstate: string, message: string, options?: { cause?: unknown });
  readonly sqlstate: string;
  readonly code: string;
  /** Class 08: the connection is gone. */
  readonly connectionError: boolean;
}

// ---- the middleware ---------------------------------------------------------

export type Fingerprint = 'request' | 'json-body' | 'none';

export interface MiddlewareOptions {
  pool: Pool;
  /** Default 'Idempotency-Key'; null: never read a key. */
  keyHeader?: string | null;
  /** Default true; false: a request without the key runs the route in a plain transaction. */
  keyRequired?: boolean;
  /** The scope the key belongs to (e.g. the tenant); may throw a Rejection. Default: method and path. */
  scope?: (req: IncomingMessage) => string | Promise<string>;
  /** Default 'request': method + path + body, as the C++ middleware. */
  fingerprint?: Fingerprint;
  /** The response headers to store and replay (default: all but Date and hop-by-hop ones). */
  replayHeaders?: string[];
  ttl?: Interval;
  lease?: Interval;
  wait?: Interval;
  /** Largest body read, in bytes (1 MiB). */
  limit?: number;
  /** Longest wait for a pool connection in ms (5000), then 503 with Retry-After. */
  acquireTimeout?: number;
  /** Most requests waiting for a connection at once (default: the pool's max), more: 503 at once. */
  maxWaiting?: number;
  /** Retry-After of the 503 answers, in seconds (1). */
  retryAfter?: number;
  /**
   * OpenTelemetry spans and metrics, when @opentelemetry/api is installed (default: on, with the
   * global providers). false: off.
   */
  telemetry?: false | TelemetryOptions;
}

export interface TelemetryOptions {
  /** Default: the global tracer provider. */
  tracerProvider?: { getTracer(name: string, version?: string): any };
  /** Default: the global meter provider. */
  meterProvider?: { getMeter(name: string, version?: string): any };
  /** Record the raw key as pg_idempotency.key (default false: only its SHA-256 as pg_idempotency.key_hash). */
  recordRawKey?: boolean;
  /**
   * Store the request span's traceparent with the key, so that a replay's span links to the span that
   * did the work (default true; needs extension 1.2: false for a database still at 1.0 or 1.1).
   */
  storeTraceContext?: boolean;
  /** On a replay, one lookup() for pg_idempotency.first_execution.age (default true; recorded spans only). */
  firstExecutionAge?: boolean;
}

export type Middleware = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => Promise<void>;

export function idempotency(options: MiddlewareOptions): Middleware;
/** The route in a plain transaction (req.db), no key. */
export function transaction(options: Omit<MiddlewareOptions, 'keyHeader' | 'keyRequired'>): Middleware;
/** Answers with an error body and stores nothing: the work and the claim are rolled back. */
export function reject(res: ServerResponse, status: number, code: string, message: string): void;

export class Rejection extends Error {
  constructor(status: number, code: string, message: string, headers?: Record<string, string>);
  readonly status: number;
  readonly code: string;
  readonly headers: Record<string, string>;
}

/** The JSON document whose idempotency.fingerprint() the middleware checks (the C++ middleware's). */
export function fingerprintDocument(req: IncomingMessage, raw: Buffer, text: string | null, mode?: Fingerprint): string;

/** What the middleware sets on the request for the route. */
export interface IdempotencyRequestFields {
  /** The client of the transaction that holds the key. */
  db: PoolClient;
  /** The key held, or null in a plain transaction. */
  idempotency: { scope: string; key: string; token: bigint | null } | null;
  /** The body's bytes. */
  rawBody: Buffer;
}

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request extends IdempotencyRequestFields {}
  }
}
