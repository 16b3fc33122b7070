package migrate

import "io"

// WriteError writes one ERROR frame carrying reason (truncated to
// MaxReason bytes) to w. A destination uses it to refuse a source before
// any migration starts, in the protocol the source speaks: a source
// without the authenticated channel the destination requires learns why
// (Send fails with ErrPeerAborted and the reason) instead of seeing the
// connection drop.
func WriteError(w io.Writer, reason string) error {
	_, err := w.Write(appendFrame(nil, frameError, 0, reasonPayload(reason)))
	return err
}
