package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/hookstream/hookstream/pkg/duration"
	"github.com/hookstream/hookstream/pkg/service"
)

// ServerConfig configures the process's HTTP server.
type ServerConfig struct {
	// ListenAddress, default ":8080".
	ListenAddress string `yaml:"listen_address"`
	// ShutdownTimeout bounds how long in-flight requests may take to finish
	// at shutdown, default 10s.
	ShutdownTimeout duration.Duration `yaml:"shutdown_timeout"`
	// Pprof serves net/http/pprof's profiles under /debug/pprof/ on this
	// server, default false. Anyone who reaches the port can then take
	// profiles (the API's port, on ingest): turn it on while profiling.
	Pprof bool `yaml:"pprof"`
}

// RegisterFlags registers the server's flags with prefix (e.g. "server.").
func (c *ServerConfig) RegisterFlags(prefix string, fs *flag.FlagSet) {
	fs.StringVar(&c.ListenAddress, prefix+"listen-address", ":8080", "HTTP listen address for the API, /healthz, /readyz and /metrics.")
	c.ShutdownTimeout = duration.Duration(10 * time.Second)
	fs.Var(&c.ShutdownTimeout, prefix+"shutdown-timeout", "How long in-flight HTTP requests may take at shutdown.")
	fs.BoolVar(&c.Pprof, prefix+"pprof", false, "Serve Go profiles (net/http/pprof) under /debug/pprof/, unauthenticated, on the listen address.")
}

// ReadyFunc reports readiness and, when not ready, why.
type ReadyFunc func() (ready bool, detail map[string]string)

// Server is the one HTTP server of a process. Components add their routes to
// Mux before the server starts.
type Server struct {
	Mux *http.ServeMux

	cfg ServerConfig
	log *slog.Logger

	mu    sync.Mutex
	ready ReadyFunc
	ln    net.Listener
	srv   *http.Server
}

// NewServer returns a server with /healthz, /readyz, /metrics when metrics
// is not nil, and /debug/pprof/ when cfg.Pprof is set.
func NewServer(cfg ServerConfig, log *slog.Logger, metrics http.Handler) *Server {
	s := &Server{Mux: http.NewServeMux(), cfg: cfg, log: log}
	s.Mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.Mux.HandleFunc("GET /readyz", s.readyz)
	if metrics != nil {
		s.Mux.Handle("GET /metrics", metrics)
	}
	if cfg.Pprof {
		// The routes net/http/pprof registers on http.DefaultServeMux,
		// which Hookstream does not serve. Index serves the named
		// profiles (heap, goroutine, allocs, block, mutex, ...).
		s.Mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.Mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.Mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.Mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.Mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		log.Warn("serving Go profiles under /debug/pprof/ without authentication", "listen_address", cfg.ListenAddress)
	}
	return s
}

// SetReady installs the readiness check; until then /readyz answers 503.
func (s *Server) SetReady(f ReadyFunc) {
	s.mu.Lock()
	s.ready = f
	s.mu.Unlock()
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	f := s.ready
	s.mu.Unlock()
	ready, detail := false, map[string]string{"server": "starting"}
	if f != nil {
		ready, detail = f()
	}
	w.Header().Set("Content-Type", "application/json")
	if !ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": ready, "components": detail})
}

// Addr is the bound address once the server's service has started.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Service returns the server's lifecycle: it binds in starting (so a busy
// port fails the start), serves while running and drains at stop.
func (s *Server) Service() *service.Service {
	return service.New("server",
		func(context.Context) error {
			ln, err := net.Listen("tcp", s.cfg.ListenAddress)
			if err != nil {
				return fmt.Errorf("http listen: %w", err)
			}
			s.mu.Lock()
			s.ln = ln
			s.srv = &http.Server{Handler: s.Mux, ReadHeaderTimeout: 10 * time.Second}
			s.mu.Unlock()
			return nil
		},
		func(ctx context.Context) error {
			errCh := make(chan error, 1)
			go func() { errCh <- s.srv.Serve(s.ln) }()
			select {
			case err := <-errCh:
				return err
			case <-ctx.Done():
			}
			sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout.Std())
			defer cancel()
			err := s.srv.Shutdown(sctx)
			if serveErr := <-errCh; !errors.Is(serveErr, http.ErrServerClosed) && err == nil {
				err = serveErr
			}
			return err
		},
		nil)
}

// WriteJSON writes v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes the contract's error body {"error": "..."}.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, map[string]string{"error": msg})
}
