package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"godwit/migrate"
	"godwit/migrate/secure"
)

// maxBusyRefusals bounds the refusals in progress at once; connections
// beyond it are closed unanswered, so a flood costs a bounded amount of
// work.
const maxBusyRefusals = 4

// refuseWhileBusy enforces one incoming VM per receiver: first is the
// connection the receiver took (nil if Accept failed, which closes ln
// and returns). Until stop is called, every other connection to ln is
// answered with an ERROR frame saying the receiver is busy, then closed:
// refused at once, not queued, and without touching first. With an
// authenticated channel the refusal travels over it once the peer has
// authenticated (an unauthenticated peer gets it in the clear, as
// refusePlain answers a plain source). stop closes ln, cuts refusals in
// progress short and waits for them; it may be called more than once.
func refuseWhileBusy(ln net.Listener, first net.Conn, channel *secure.Config, timeout time.Duration, log *slog.Logger) (stop func()) {
	if first == nil {
		ln.Close()
		return func() {}
	}
	from := first.RemoteAddr().String()
	reason := fmt.Sprintf("this godwit receive is already receiving a VM (from %s) and takes only one: start another receiver", from)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		active  = map[net.Conn]bool{}
		stopped bool
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // ln closed by stop
			}
			mu.Lock()
			full := stopped || len(active) >= maxBusyRefusals
			if !full {
				active[c] = true
				wg.Add(1)
			}
			mu.Unlock()
			log.Warn("refused another migrating VM: this receiver is busy", "from", c.RemoteAddr().String(), "receiving_from", from)
			if full {
				c.Close()
				continue
			}
			go func() {
				defer wg.Done()
				refuseBusy(c, channel, timeout, reason)
				mu.Lock()
				delete(active, c)
				mu.Unlock()
			}()
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			ln.Close()
			mu.Lock()
			stopped = true
			for c := range active {
				c.Close()
			}
			mu.Unlock()
			wg.Wait()
		})
	}
}

// refuseBusy answers one connection to a busy receiver with reason in an
// ERROR frame, within refuseTimeout (and the handshake within timeout),
// and closes it.
func refuseBusy(c net.Conn, channel *secure.Config, timeout time.Duration, reason string) {
	defer c.Close()
	if channel == nil {
		refusePlain(c, reason)
		return
	}
	if timeout <= 0 || timeout > refuseTimeout {
		timeout = refuseTimeout
	}
	sc := secure.Server(c, channel)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := sc.Handshake(ctx); err != nil {
		if errors.Is(err, secure.ErrNotSecure) {
			refusePlain(c, reason)
		}
		return
	}
	// As refusePlain does: wait (briefly) for the source to hang up, so
	// that closing with its HELLO unread does not reset the connection
	// before it has read the reason.
	sc.SetDeadline(time.Now().Add(refuseTimeout))
	if migrate.WriteError(sc, reason) == nil {
		io.Copy(io.Discard, io.LimitReader(sc, 64<<20))
	}
}
