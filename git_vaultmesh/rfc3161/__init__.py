"""RFC 3161 timestamps: a strict DER reader (der), token parsing and verification (tsa), the HTTP client
(client), fetching from several TSAs at once (fetch), the loopback test/demo server (server), and how tokens
attach to ledger entries (timestamping)."""
