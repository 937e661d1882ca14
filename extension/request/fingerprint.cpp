// idempotency.fingerprint(jsonb): SHA-256 of a canonical text form of a JSON
// request, so that key order, white space, duplicate keys and number spelling
// (1.0 vs 1, 1e2 vs 100) never make two equal requests look different.
//
// The canonical form is compact JSON: object keys in jsonb's own order (by
// length, then bytes), numbers in numeric_normalize()'s shortest form, strings
// escaped as JSON does.
#include "pg/boundary.hpp"
#include "pg/pg_headers.hpp"

extern "C" {
#include "lib/stringinfo.h"
#include "utils/json.h"
#include "utils/numeric.h"
}

namespace pgi {
namespace {

constexpr int kDigestBytes = 32;

void AppendScalar(StringInfo out, const JsonbValue& v) {
  switch (v.type) {
    case jbvNull:
      appendStringInfoString(out, "null");
      break;
    case jbvBool:
      appendStringInfoString(out, v.val.boolean ? "true" : "false");
      break;
    case jbvNumeric:
      appendStringInfoString(out, numeric_normalize(v.val.numeric));
      break;
    case jbvString:
      escape_json(out, pnstrdup(v.val.string.val, v.val.string.len));
      break;
    default:
      elog(ERROR, "pg_idempotency: unexpected jsonb value type %d", static_cast<int>(v.type));
  }
}

void AppendCanonical(StringInfo out, Jsonb* jb) {
  JsonbIterator* it = JsonbIteratorInit(&jb->root);
  JsonbValue v;
  JsonbIteratorToken previous = WJB_DONE;
  bool top_is_scalar = false;
  int depth = 0;
  for (JsonbIteratorToken token; (token = JsonbIteratorNext(&it, &v, false)) != WJB_DONE; previous = token) {
    const bool starts_item = token == WJB_KEY || token == WJB_ELEM || token == WJB_VALUE || token == WJB_BEGIN_ARRAY ||
                             token == WJB_BEGIN_OBJECT;
    // A comma goes between siblings: before an item that follows a finished one.
    if (starts_item && token != WJB_VALUE && previous != WJB_DONE && previous != WJB_BEGIN_ARRAY &&
        previous != WJB_BEGIN_OBJECT && previous != WJB_KEY)
      appendStringInfoChar(out, ',');
    switch (token) {
      case WJB_BEGIN_ARRAY:
        if (depth++ == 0 && v.val.array.rawScalar)
          top_is_scalar = true;
        else
          appendStringInfoChar(out, '[');
        break;
      case WJB_END_ARRAY:
        if (--depth > 0 || !top_is_scalar) appendStringInfoChar(out, ']');
        break;
      case WJB_BEGIN_OBJECT:
        depth++;
        appendStringInfoChar(out, '{');
        break;
      case WJB_END_OBJECT:
        depth--;
        appendStringInfoChar(out, '}');
        break;
      case WJB_KEY:
        AppendScalar(out, v);
        appendStringInfoChar(out, ':');
        break;
      case WJB_VALUE:
      case WJB_ELEM:
        AppendScalar(out, v);
        break;
      case WJB_DONE:
        break;
    }
  }
}

bytea* Sha256(const StringInfo data) {
  bytea* digest = static_cast<bytea*>(palloc(VARHDRSZ + kDigestBytes));
  SET_VARSIZE(digest, VARHDRSZ + kDigestBytes);
  pg_cryptohash_ctx* ctx = pg_cryptohash_create(PG_SHA256);
  if (ctx == nullptr || pg_cryptohash_init(ctx) < 0 ||
      pg_cryptohash_update(ctx, reinterpret_cast<const uint8*>(data->data), data->len) < 0 ||
      pg_cryptohash_final(ctx, reinterpret_cast<uint8*>(VARDATA(digest)), kDigestBytes) < 0)
    elog(ERROR, "pg_idempotency: could not compute SHA-256: %s", pg_cryptohash_error(ctx));
  pg_cryptohash_free(ctx);
  return digest;
}

}  // namespace
}  // namespace pgi

PGI_SQL_FUNCTION(idempotency_fingerprint) {
  return pgi::Guard([&] {
    return pgi::PgCall([&] {
      StringInfoData canonical;
      initStringInfo(&canonical);
      pgi::AppendCanonical(&canonical, PG_GETARG_JSONB_P(0));
      return PointerGetDatum(pgi::Sha256(&canonical));
    });
  });
}
