package secure

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Handshake message layout (see the package documentation).
const (
	hsMagic        = "GWSC"
	hsVersion      = 1
	hsHeaderLen    = 8 // magic[4] | version u8 | type u8 | length u16
	nonceLen       = 32
	macLen         = sha256.Size
	maxAlertReason = 200
	maxHSBody      = 1 + maxAlertReason
)

// msgType is a handshake message type.
type msgType uint8

// Handshake message types.
const (
	msgClientHello msgType = 1
	msgServerHello msgType = 2
	msgClientProof msgType = 3
	msgServerDone  msgType = 4
	msgAlert       msgType = 5
)

func (t msgType) String() string {
	switch t {
	case msgClientHello:
		return "CLIENT_HELLO"
	case msgServerHello:
		return "SERVER_HELLO"
	case msgClientProof:
		return "CLIENT_PROOF"
	case msgServerDone:
		return "SERVER_DONE"
	case msgAlert:
		return "ALERT"
	}
	return fmt.Sprintf("message type %d", uint8(t))
}

// bodyBounds returns the smallest and largest body of a message type;
// ok is false for unknown types.
func bodyBounds(t msgType) (lo, hi int, ok bool) {
	switch t {
	case msgClientHello:
		return nonceLen, nonceLen, true
	case msgServerHello:
		return nonceLen + macLen, nonceLen + macLen, true
	case msgClientProof, msgServerDone:
		return macLen, macLen, true
	case msgAlert:
		return 1, maxHSBody, true
	}
	return 0, 0, false
}

// Alert codes.
const (
	alertWrongKey uint8 = 1 // the other side's proof did not verify
	alertProtocol uint8 = 2 // unexpected or malformed message
)

// hsMsg is one decoded handshake message.
type hsMsg struct {
	typ  msgType
	body []byte
}

// appendMsg encodes a handshake message. body must respect the type's
// bounds.
func appendMsg(dst []byte, t msgType, body []byte) []byte {
	dst = append(dst, hsMagic...)
	dst = append(dst, hsVersion, byte(t))
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(body)))
	return append(dst, body...)
}

// readMsg reads one handshake message, checking magic, version, type and
// the body length (against the type's bounds) before it reads the body.
// Transport errors are returned as they are; anything else wraps ErrAuth
// (and ErrNotSecure when the magic is wrong: the peer is not running this
// protocol).
func readMsg(r io.Reader) (hsMsg, error) {
	var h [hsHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return hsMsg{}, err
	}
	if string(h[:4]) != hsMagic {
		return hsMsg{}, notSecure(h[:])
	}
	if h[4] != hsVersion {
		return hsMsg{}, fmt.Errorf("%w: the peer speaks pre-shared-key handshake version %d, this side version %d", ErrAuth, h[4], hsVersion)
	}
	t := msgType(h[5])
	n := int(binary.LittleEndian.Uint16(h[6:]))
	lo, hi, ok := bodyBounds(t)
	if !ok {
		return hsMsg{}, fmt.Errorf("%w: unknown handshake %s", ErrAuth, t)
	}
	if n < lo || n > hi {
		return hsMsg{}, fmt.Errorf("%w: handshake %s with a body of %d bytes, want %d..%d", ErrAuth, t, n, lo, hi)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return hsMsg{}, err
	}
	return hsMsg{typ: t, body: body}, nil
}

// notSecure describes a peer whose first bytes are not a handshake
// message of this protocol.
func notSecure(first []byte) error {
	what := fmt.Sprintf("its first bytes (% x) are not a pre-shared-key handshake", first)
	if len(first) >= 2 && first[0] == 0x16 && first[1] == 0x03 {
		what = "it started a TLS handshake"
	}
	return fmt.Errorf("%w: %w: %s", ErrAuth, ErrNotSecure, what)
}

// alertBody encodes an ALERT body.
func alertBody(code uint8, reason string) []byte {
	if len(reason) > maxAlertReason {
		reason = reason[:maxAlertReason]
		for !utf8.ValidString(reason) {
			reason = reason[:len(reason)-1]
		}
	}
	return append([]byte{code}, reason...)
}

// alertError turns a received ALERT into the local error.
func alertError(body []byte) error {
	if body[0] == alertWrongKey {
		return fmt.Errorf("%w: wrong pre-shared key: the peer could not verify our proof (its key differs)", ErrAuth)
	}
	return fmt.Errorf("%w: the peer refused the handshake: %s", ErrAuth, printable(body[1:]))
}

// printable escapes control characters and invalid UTF-8 in text from
// the peer.
func printable(b []byte) string {
	s := string(b)
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		q := fmt.Sprintf("%q", s)
		return q[1 : len(q)-1]
	}
	return s
}

// pskKeys is the key schedule of one pre-shared-key session.
type pskKeys struct {
	proof, c2s, s2c []byte
}

// deriveKeys computes the key schedule from the key and both nonces.
func deriveKeys(psk, nc, ns []byte) (pskKeys, error) {
	salt := append(append(make([]byte, 0, 2*nonceLen), nc...), ns...)
	prk, err := hkdf.Extract(sha256.New, psk, salt)
	if err != nil {
		return pskKeys{}, err
	}
	var k pskKeys
	for _, d := range []struct {
		dst   *[]byte
		label string
	}{
		{&k.proof, "godwit psk v1 proof"},
		{&k.c2s, "godwit psk v1 client to server"},
		{&k.s2c, "godwit psk v1 server to client"},
	} {
		if *d.dst, err = hkdf.Expand(sha256.New, prk, d.label, keyLen); err != nil {
			return pskKeys{}, err
		}
	}
	return k, nil
}

// proofMAC is HMAC-SHA256(key, label || nc || ns).
func proofMAC(key []byte, label string, nc, ns []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(nc)
	m.Write(ns)
	return m.Sum(nil)
}

// MAC labels; each role proves with its own.
const (
	labelServer = "server"
	labelClient = "client"
	labelDone   = "server done"
)

// wrongKey is the error of the side whose check of the peer's proof
// failed.
var wrongKey = fmt.Errorf("%w: wrong pre-shared key: the peer's proof does not verify with our key", ErrAuth)

// pskHandshake runs the pre-shared-key handshake on rw and returns the
// keys for sending and receiving.
func pskHandshake(rw io.ReadWriter, psk []byte, client bool) (send, recv []byte, err error) {
	var h pskHS
	h.rw, h.psk = rw, psk
	if client {
		err = h.client()
	} else {
		err = h.server()
	}
	if err != nil {
		return nil, nil, err
	}
	if client {
		return h.keys.c2s, h.keys.s2c, nil
	}
	return h.keys.s2c, h.keys.c2s, nil
}

// pskHS is the state of one pre-shared-key handshake.
type pskHS struct {
	rw     io.ReadWriter
	psk    []byte
	nc, ns []byte
	keys   pskKeys
}

func (h *pskHS) send(t msgType, body []byte) error {
	_, err := h.rw.Write(appendMsg(nil, t, body))
	return err
}

// alert tells the peer why the handshake stops (best effort) and returns
// err.
func (h *pskHS) alert(code uint8, err error) error {
	h.send(msgAlert, alertBody(code, err.Error()))
	return err
}

// expect reads the next message, which must be of type want; an ALERT
// becomes the peer's error, anything else is answered with an ALERT.
func (h *pskHS) expect(want msgType) ([]byte, error) {
	m, err := readMsg(h.rw)
	switch {
	case errors.Is(err, ErrNotSecure):
		return nil, err // no point in answering in this protocol
	case errors.Is(err, ErrAuth):
		return nil, h.alert(alertProtocol, err)
	case err != nil:
		return nil, err
	case m.typ == msgAlert:
		return nil, alertError(m.body)
	case m.typ != want:
		return nil, h.alert(alertProtocol, fmt.Errorf("%w: the peer sent %s where %s belongs", ErrAuth, m.typ, want))
	}
	return m.body, nil
}

// derive computes the key schedule once both nonces are known.
func (h *pskHS) derive() error {
	if hmac.Equal(h.nc, h.ns) {
		return h.alert(alertProtocol, fmt.Errorf("%w: the peer echoed our nonce", ErrAuth))
	}
	k, err := deriveKeys(h.psk, h.nc, h.ns)
	h.keys = k
	return err
}

func (h *pskHS) client() error {
	h.nc = make([]byte, nonceLen)
	rand.Read(h.nc)
	if err := h.send(msgClientHello, h.nc); err != nil {
		return err
	}
	body, err := h.expect(msgServerHello)
	if err != nil {
		return err
	}
	h.ns = body[:nonceLen]
	if err := h.derive(); err != nil {
		return err
	}
	if !hmac.Equal(body[nonceLen:], proofMAC(h.keys.proof, labelServer, h.nc, h.ns)) {
		return h.alert(alertWrongKey, wrongKey)
	}
	if err := h.send(msgClientProof, proofMAC(h.keys.proof, labelClient, h.nc, h.ns)); err != nil {
		return err
	}
	body, err = h.expect(msgServerDone)
	if err != nil {
		return err
	}
	if !hmac.Equal(body, proofMAC(h.keys.proof, labelDone, h.nc, h.ns)) {
		return h.alert(alertProtocol, fmt.Errorf("%w: the peer's handshake confirmation does not verify", ErrAuth))
	}
	return nil
}

func (h *pskHS) server() error {
	body, err := h.expect(msgClientHello)
	if err != nil {
		return err
	}
	h.nc = body
	h.ns = make([]byte, nonceLen)
	rand.Read(h.ns)
	if err := h.derive(); err != nil {
		return err
	}
	hello := append(append([]byte(nil), h.ns...), proofMAC(h.keys.proof, labelServer, h.nc, h.ns)...)
	if err := h.send(msgServerHello, hello); err != nil {
		return err
	}
	body, err = h.expect(msgClientProof)
	if err != nil {
		return err
	}
	if !hmac.Equal(body, proofMAC(h.keys.proof, labelClient, h.nc, h.ns)) {
		return h.alert(alertWrongKey, wrongKey)
	}
	return h.send(msgServerDone, proofMAC(h.keys.proof, labelDone, h.nc, h.ns))
}
