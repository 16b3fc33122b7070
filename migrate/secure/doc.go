// Package secure authenticates and encrypts a migration channel. It wraps
// a net.Conn (the TCP connection between `godwit migrate`'s source VM and
// `godwit receive`) and returns a *Conn, itself a net.Conn, over which the
// migration engine (package migrate) runs unchanged. Nothing of the VM
// crosses the wire, in either direction, before both sides have
// authenticated each other.
//
// Two modes exist; a Config chooses one:
//
//   - Mutual TLS (crypto/tls, TLS 1.3 only). The destination requires a
//     client certificate and verifies it against its CA; the source
//     verifies the destination's certificate against its CA and the
//     expected server name. Either side can pin the peer's identity
//     (Config.PeerName).
//   - A pre-shared key, for labs and CI: an HMAC-SHA256 mutual
//     challenge-response, then AES-256-GCM records with per-direction
//     keys. Specified below.
//
// The handshake runs on the first Read or Write, or explicitly through
// Conn.Handshake. Deadlines set on the Conn apply to the handshake and to
// every later read and write, so the engine's way of cancelling a
// migration (a deadline in the past) works through it. A failed handshake
// is final: every later Read and Write returns its error.
//
// Authentication failures wrap ErrAuth; a peer that did not start the
// handshake at all (a plain source or receiver, or one in the other mode)
// also wraps ErrNotSecure.
//
// # TLS mode
//
// After the TLS handshake, the server verifies the client certificate
// (and, with PeerName, that it names the expected peer) and then writes
// the 4 bytes "GWOK" as the first application data; the client's
// handshake ends only once it has read them. In TLS 1.3 the client's
// handshake otherwise completes before the server has checked the client
// certificate, and the client would learn of a refusal only on its first
// read, after it had started sending the VM.
//
// # Pre-shared-key mode: handshake
//
// Every handshake message is
//
//	magic "GWSC" | version u8 (1) | type u8 | length u16 LE | body [length]byte
//
// where length is checked against the type's fixed size (or, for ALERT,
// its bound) before the body is read. The conversation:
//
//	C: CLIENT_HELLO  (1)  nonce_c [32]
//	S: SERVER_HELLO  (2)  nonce_s [32] | proof_s [32]
//	C: CLIENT_PROOF  (3)  proof_c [32]
//	S: SERVER_DONE   (4)  confirm [32]
//	either: ALERT    (5)  code u8 | reason (UTF-8, at most 200 bytes)
//
// Nonces come from crypto/rand. With HKDF-SHA256 (RFC 5869):
//
//	prk     = HKDF-Extract(salt = nonce_c || nonce_s, ikm = the key file's bytes)
//	k_proof = HKDF-Expand(prk, "godwit psk v1 proof", 32)
//	k_c2s   = HKDF-Expand(prk, "godwit psk v1 client to server", 32)
//	k_s2c   = HKDF-Expand(prk, "godwit psk v1 server to client", 32)
//	proof_s = HMAC-SHA256(k_proof, "server" || nonce_c || nonce_s)
//	proof_c = HMAC-SHA256(k_proof, "client" || nonce_c || nonce_s)
//	confirm = HMAC-SHA256(k_proof, "server done" || nonce_c || nonce_s)
//
// Each side proves knowledge of the key over both nonces, one of which it
// did not choose, so a recorded proof is useless in another session
// (replay); the role in every MAC keeps a server's proof from passing as
// a client's (reflection), and equal nonces are refused. The client
// checks proof_s before it sends anything derived from the key, the
// server checks proof_c before it confirms, and the client sends no
// record before it has checked confirm. MACs are compared in constant
// time. A side that rejects the other's proof sends ALERT (code 1, wrong
// key) so that both report "wrong pre-shared key"; an unexpected or
// malformed message draws ALERT code 2.
//
// # Pre-shared-key mode: records
//
// After the handshake, each direction is a sequence of records:
//
//	type u8 | length u24 LE | AES-256-GCM ciphertext and tag [length]byte
//
// Type 1 is data (1..MaxRecordPayload bytes of plaintext), type 2 is
// close (no plaintext), sent by Close. The length is checked (16 + 1 ..
// 16 + MaxRecordPayload for data, exactly 16 for close) before any of the
// record is read. The GCM nonce is 4 zero bytes and the record's sequence
// number (u64 big-endian, from 0 in each direction), the additional data
// is the 4-byte header, and the key is that direction's key. So a
// modified, dropped, duplicated, reordered or injected record fails
// authentication, and a stream that ends without a close record (at a
// record boundary or inside one) is reported as truncated, never as a
// clean io.EOF. Every RekeyRecords records a direction's key is replaced
// by HKDF-Expand(key, "godwit psk v1 key update", 32) on both sides,
// keeping each AES-GCM key far below its usage limits. Any error on a
// record ends the stream; only deadline expiries (which lose nothing: a
// partial record stays buffered) can be retried.
package secure
