'use strict';
// The request's fingerprint document, built exactly as the C++ middleware
// (<idempotency/httplib.hpp>) builds it, so that a key can move between a C++
// and a Node service: idempotency.fingerprint() of
//   ["POST", "/payments", <body>]                      a JSON body (canonical: key order and spacing do not count)
//   {"method": ..., "path": ..., "body_hex": "..."}    any other body, as hex of its bytes
//   <body>                                             fingerprint 'json-body': the JSON body alone
// An empty body is no body, whatever its Content-Type: it takes the second
// form with "body_hex": "" (and the JSON null for 'json-body').

function isJson(req) {
  const type = String(req.headers['content-type'] || '').split(';')[0].trim().toLowerCase();
  return type === 'application/json' || (type.length > 5 && type.endsWith('+json'));
}

// The request path as cpp-httplib gives it: percent-decoded, without the query,
// and the full path even inside a mounted Express router.
function requestPath(req) {
  const url = req.originalUrl ?? req.url ?? '/';
  const q = url.indexOf('?');
  const path = q < 0 ? url : url.slice(0, q);
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

// raw: the body's bytes; text: the body decoded as UTF-8 when it is JSON (else null).
function fingerprintDocument(req, raw, text, mode = 'request') {
  if (mode === 'json-body') return text ?? 'null';
  if (text !== null && raw.length > 0 && isJson(req)) {
    return `[${JSON.stringify(req.method)}, ${JSON.stringify(requestPath(req))}, ${text}]`;
  }
  return JSON.stringify({ method: req.method, path: requestPath(req), body_hex: raw.toString('hex') });
}

module.exports = { fingerprintDocument, isJson, requestPath };
