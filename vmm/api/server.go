package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Server timeouts. There is no write timeout: a memory dump may take long,
// and the response is only written once it is done.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// closeGrace is how long Close waits for in-flight requests before it
	// drops their connections.
	closeGrace = 2 * time.Second
)

// errServerClosed is returned by Serve after Close.
var errServerClosed = errors.New("api: server closed")

// handlerFunc handles one route. It returns the value to send as JSON with
// status 200, or an error that writeError maps to a status.
type handlerFunc func(s *Server, r *http.Request) (any, error)

// route is one method on one path.
type route struct {
	method string
	path   string
	h      handlerFunc
}

// routes is the whole API. docs/api.yaml documents each entry (a test checks).
//
// The /migrate routes answer 409 when the Controller is not a Migrator.
var routes = []route{
	{http.MethodGet, "/vm", (*Server).handleInfo},
	{http.MethodPut, "/vm/pause", (*Server).handlePause},
	{http.MethodPut, "/vm/resume", (*Server).handleResume},
	{http.MethodPut, "/vm/shutdown", (*Server).handleShutdown},
	{http.MethodPut, "/vm/dump-memory", (*Server).handleDumpMemory},
	{http.MethodPut, "/migrate", (*Server).handleMigrate},
	{http.MethodGet, "/migrate", (*Server).handleMigrationStatus},
	{http.MethodPut, "/migrate/cancel", (*Server).handleMigrationCancel},
}

// Server serves the control API for one Controller.
type Server struct {
	c       Controller
	log     *slog.Logger
	handler http.Handler
	ready   chan struct{}

	mu      sync.Mutex
	srv     *http.Server
	ln      *net.UnixListener
	path    string // the socket ln is bound to
	closed  bool
	closeMu sync.Mutex // serialises Close
}

// NewServer returns a server for c. A nil log discards log output.
func NewServer(c Controller, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{c: c, log: log, ready: make(chan struct{})}
	s.handler = s.buildHandler()
	return s
}

// Handler returns the API's HTTP handler, for tests with httptest.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready returns a channel that is closed once Serve is accepting connections
// on its socket.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Listen binds the unix socket socketPath as Serve does, without serving
// it yet: clients that connect wait in the socket's backlog until Serve
// runs. A VM receiving a migration binds its socket this way before the
// migration's pause, so that starting it afterwards costs no bind; a
// socket that cannot be bound fails the migration before anything moved.
// Close unbinds it, served or not.
func (s *Server) Listen(socketPath string) error {
	if socketPath == "" {
		return errors.New("api: empty socket path")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errServerClosed
	}
	if s.ln != nil {
		return fmt.Errorf("api: already listening on %s", s.path)
	}
	ln, err := listenUnix(socketPath)
	if err != nil {
		return err
	}
	s.ln, s.path = ln, socketPath
	return nil
}

// Serve listens on the unix socket socketPath (mode 0600), unless Listen
// bound it already, and serves the API until Close is called, when it
// returns nil. A stale socket at socketPath (one nobody is listening on) is
// removed first; any other existing file, or a socket another process is
// serving, is left alone and is an error. Serve may be called only once.
func (s *Server) Serve(socketPath string) error {
	if socketPath == "" {
		return errors.New("api: empty socket path")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errServerClosed
	}
	if s.srv != nil {
		s.mu.Unlock()
		return errors.New("api: Serve called twice")
	}
	ln := s.ln
	if ln != nil && s.path != socketPath {
		s.mu.Unlock()
		return fmt.Errorf("api: Serve(%s) after Listen(%s)", socketPath, s.path)
	}
	if ln == nil {
		var err error
		if ln, err = listenUnix(socketPath); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.srv, s.ln, s.path = srv, ln, socketPath
	s.mu.Unlock()
	close(s.ready)
	s.log.Info("control API listening", "socket", socketPath)

	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("api: serving %s: %w", socketPath, err)
	}
	return nil
}

// Close stops listening, removes the socket, and waits up to two seconds for
// in-flight requests before dropping their connections. Close is safe to call
// more than once and before Serve.
func (s *Server) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	s.mu.Lock()
	already := s.closed
	s.closed = true
	srv, ln := s.srv, s.ln
	s.mu.Unlock()
	if already {
		return nil
	}
	if srv == nil {
		// Never served: only a Listen to undo (which unlinks the socket).
		if ln != nil {
			ln.Close()
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeGrace)
	defer cancel()
	err := srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	// Shutdown closed the listener if Serve had started accepting, which
	// unlinks the socket file (once); close it here as well in case Serve
	// had not got that far. This comes after Shutdown so that Serve sees
	// the shutdown rather than an unexpected listener error.
	ln.Close()
	if err != nil {
		return fmt.Errorf("api: closing: %w", err)
	}
	return nil
}

// listenUnix removes a stale socket at path and listens there with mode 0600.
func listenUnix(path string) (*net.UnixListener, error) {
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api: listening on %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	// The socket's directory is what really guards it; chmod narrows the
	// file itself to the owner.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api: restricting %s to its owner: %w", path, err)
	}
	return ln, nil
}

// removeStaleSocket removes path if it is a unix socket nobody listens on.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api: checking socket path %s: %w", path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("api: %s exists and is not a socket; refusing to replace it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("api: another process is already serving on %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api: removing stale socket %s: %w", path, err)
	}
	return nil
}

// buildHandler routes requests by path, then by method, so that a wrong
// method gets 405 with an Allow header and an unknown path gets 404, both
// with JSON bodies.
func (s *Server) buildHandler() http.Handler {
	byPath := map[string]map[string]handlerFunc{}
	for _, rt := range routes {
		if byPath[rt.path] == nil {
			byPath[rt.path] = map[string]handlerFunc{}
		}
		byPath[rt.path][rt.method] = rt.h
	}
	allow := map[string]string{}
	for p, methods := range byPath {
		var ms []string
		for m := range methods {
			ms = append(ms, m)
		}
		sort.Strings(ms)
		allow[p] = strings.Join(ms, ", ")
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		methods, ok := byPath[r.URL.Path]
		if !ok {
			s.writeError(w, r, &httpError{http.StatusNotFound, fmt.Sprintf("no such API path %q", r.URL.Path)})
			return
		}
		h, ok := methods[r.Method]
		if !ok {
			w.Header().Set("Allow", allow[r.URL.Path])
			s.writeError(w, r, &httpError{http.StatusMethodNotAllowed,
				fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow[r.URL.Path])})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
		v, err := h(s, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		s.log.Debug("api request", "method", r.Method, "path", r.URL.Path, "status", http.StatusOK)
		writeJSON(w, http.StatusOK, v)
	})
}

func (s *Server) handleInfo(r *http.Request) (any, error) {
	info := s.c.Info()
	if info.Exits == nil {
		info.Exits = map[string]uint64{}
	}
	return info, nil
}

func (s *Server) handlePause(r *http.Request) (any, error) {
	return s.stateChange(r, s.c.Pause)
}

func (s *Server) handleResume(r *http.Request) (any, error) {
	return s.stateChange(r, s.c.Resume)
}

func (s *Server) handleShutdown(r *http.Request) (any, error) {
	return s.stateChange(r, s.c.Shutdown)
}

// stateChange accepts an empty body or an empty JSON object, runs op and
// reports the resulting state.
func (s *Server) stateChange(r *http.Request, op func(context.Context) error) (any, error) {
	var empty struct{}
	if err := decodeJSON(r.Body, &empty, true); err != nil {
		return nil, err
	}
	if err := op(r.Context()); err != nil {
		return nil, err
	}
	return StateResponse{State: s.c.Info().State}, nil
}

func (s *Server) handleDumpMemory(r *http.Request) (any, error) {
	req, err := decodeDumpRequest(r.Body)
	if err != nil {
		return nil, err
	}
	if err := s.c.DumpMemory(r.Context(), req.Path, req.GPA, req.Len); err != nil {
		return nil, err
	}
	n := req.Len
	if n == 0 {
		// The Controller does not report how much "to the end of RAM" was;
		// the dump file on this host does.
		if fi, err := os.Stat(req.Path); err == nil && fi.Mode().IsRegular() {
			n = uint64(fi.Size())
		}
	}
	s.log.Info("memory dumped", "path", req.Path, "gpa", req.GPA, "bytes", n)
	return DumpResponse{Path: req.Path, Bytes: n}, nil
}

// decodeDumpRequest decodes and validates a dump-memory body.
func decodeDumpRequest(body io.Reader) (DumpRequest, error) {
	var req DumpRequest
	if err := decodeJSON(body, &req, false); err != nil {
		return DumpRequest{}, err
	}
	if err := req.validate(); err != nil {
		return DumpRequest{}, err
	}
	return req, nil
}

// validate checks the fields of a decoded dump request.
func (d DumpRequest) validate() error {
	switch {
	case d.Path == "":
		return badRequest(`"path" is required`)
	case strings.IndexByte(d.Path, 0) >= 0:
		return badRequest(`"path" contains a NUL byte`)
	case !filepath.IsAbs(d.Path):
		return badRequest(fmt.Sprintf(`"path" must be absolute (it is a path on the VMM's host), got %q`, d.Path))
	case d.Len > math.MaxUint64-d.GPA:
		return badRequest(`"gpa" + "len" overflows 64 bits`)
	}
	return nil
}

// decodeJSON strictly decodes one JSON value from body into v: unknown
// fields, trailing data and (unless allowEmpty) an empty body are errors.
func decodeJSON(body io.Reader, v any, allowEmpty bool) error {
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return &httpError{http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body exceeds %d bytes", mbe.Limit)}
		}
		return &httpError{http.StatusBadRequest, fmt.Sprintf("reading request body: %v", err)}
	}
	if len(bytes.TrimSpace(data)) == 0 {
		if allowEmpty {
			return nil
		}
		return badRequest("request body is empty; expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(fmt.Sprintf("invalid JSON body: %v", err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("invalid JSON body: trailing data after the object")
	}
	return nil
}

// httpError is an error with its HTTP status.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

// badRequest returns a 400 error with msg.
func badRequest(msg string) error {
	return &httpError{http.StatusBadRequest, msg}
}

// statusOf maps an error to an HTTP status.
func statusOf(err error) int {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return he.status
	case errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, ErrInvalidState):
		return http.StatusConflict
	default:
		return http.StatusInternalServerError
	}
}

// writeError sends err as {"error": ...} with its status and logs it.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "api request failed",
		"method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	writeJSON(w, status, ErrorResponse{Error: err.Error()})
}

// writeJSON sends v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data, _ = json.Marshal(ErrorResponse{Error: "encoding response: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}
