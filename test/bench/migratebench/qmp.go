package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"time"
)

// qmp is a minimal QEMU Machine Protocol client on a unix socket.
type qmp struct {
	path string
	conn net.Conn
	dec  *json.Decoder
}

// qmpMessage is any message QEMU sends: a greeting, a reply or an event.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
	Event string `json:"event"`
}

// dialQMP connects to QEMU's QMP socket, retrying until timeout while QEMU
// starts (or until done is closed: QEMU exited), reads the greeting and
// leaves capabilities negotiation mode.
func dialQMP(path string, timeout time.Duration, done <-chan struct{}) (*qmp, error) {
	deadline := time.Now().Add(timeout)
	var conn net.Conn
	for {
		var err error
		conn, err = net.DialTimeout("unix", path, time.Second)
		if err == nil {
			break
		}
		select {
		case <-done:
			return nil, fmt.Errorf("QMP %s: QEMU exited before its socket accepted (%v)", path, err)
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("QMP %s: %w after %s: %v", path, errTimeout, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	q := &qmp{path: path, conn: conn, dec: json.NewDecoder(bufio.NewReader(conn))}
	if err := conn.SetReadDeadline(deadline.Add(10 * time.Second)); err != nil {
		conn.Close()
		return nil, err
	}
	var greeting qmpMessage
	if err := q.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("QMP %s: no greeting: %v", path, err)
	}
	if _, err := q.do("qmp_capabilities", nil, 10*time.Second); err != nil {
		conn.Close()
		return nil, err
	}
	return q, nil
}

// do runs one command and returns its "return" value; events in between
// are skipped.
func (q *qmp) do(cmd string, args any, timeout time.Duration) (json.RawMessage, error) {
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if err := q.conn.SetDeadline(deadline); err != nil {
		return nil, err
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("QMP %s: sending %s: %w", q.path, cmd, err)
	}
	for {
		var m qmpMessage
		if err := q.dec.Decode(&m); err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, fmt.Errorf("QMP %s: %s: %w after %s", q.path, cmd, errTimeout, timeout)
			}
			return nil, fmt.Errorf("QMP %s: %s: reading the reply: %w", q.path, cmd, err)
		}
		switch {
		case m.Event != "":
			continue
		case m.Error != nil:
			return nil, fmt.Errorf("QMP %s: %s: %s: %s", q.path, cmd, m.Error.Class, m.Error.Desc)
		case m.Return != nil:
			return m.Return, nil
		}
	}
}

// close closes the connection.
func (q *qmp) close() {
	if q != nil {
		q.conn.Close()
	}
}

// qemuMigration is the part of query-migrate's reply the benchmark reads.
type qemuMigration struct {
	Status    string  `json:"status"`
	TotalTime float64 `json:"total-time"`
	Downtime  float64 `json:"downtime"`
	SetupTime float64 `json:"setup-time"`
	ErrorDesc string  `json:"error-desc"`
	RAM       struct {
		Transferred    uint64 `json:"transferred"`
		DirtySyncCount int    `json:"dirty-sync-count"`
		Duplicate      uint64 `json:"duplicate"`
		Normal         uint64 `json:"normal"`
	} `json:"ram"`
}
