package redistest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/testenv"
)

// ServerOptions configure a restartable redis-server.
type ServerOptions struct {
	// AOF turns on the append-only file (appendonly yes) in the data
	// directory, so that a killed server comes back with its keys. Off: a
	// restart starts empty, as a Redis without persistence does.
	AOF bool
	// Fsync is appendfsync with AOF: "always" (nothing acknowledged is lost
	// by a kill), "everysec" (Redis' default: up to a second lost) or "no".
	// Empty means "always".
	Fsync string
}

// Server is a real redis-server on a fixed loopback port with its own data
// directory, which a test can kill (SIGKILL, as a crashed pod) and start
// again on the same port, so that clients configured with its address
// reconnect to it. Its methods are safe for concurrent use. It is stopped
// when the test ends.
type Server struct {
	bin  string
	port int
	dir  string
	opts ServerOptions

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  []string      // the last lines redis-server printed
}

// StartServer starts redis-server on a free loopback port. Kill and Start
// stop and start it on that same port.
func StartServer(t testing.TB, opts ServerOptions) *Server {
	t.Helper()
	if opts.Fsync == "" {
		opts.Fsync = "always"
	}
	s := &Server{bin: testenv.RequireTool(t, "redis-server", "redis-server"), dir: t.TempDir(), opts: opts}
	t.Cleanup(func() { s.Kill() })
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		s.port = freePort(t)
		if err = s.Start(); err == nil {
			return s
		}
	}
	t.Fatalf("could not start redis-server: %v", err)
	return nil
}

// Addr is the server's host:port; it does not change across restarts.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// Dir is the server's data directory (the AOF lives there).
func (s *Server) Dir() string { return s.dir }

// Running reports whether the server process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done == nil {
		return false
	}
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// Start starts the server (again) on its port and data directory and waits
// until it accepts commands (after loading its AOF). Starting a running
// server does nothing. The port is bound again right after a kill, which
// redis-server allows (SO_REUSEADDR); if another process took it meanwhile,
// Start retries for a few seconds and then fails.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done != nil {
		select {
		case <-s.done:
		default:
			return nil
		}
	}
	args := []string{"--port", fmt.Sprint(s.port), "--bind", "127.0.0.1", "--save", "", "--dir", s.dir}
	if s.opts.AOF {
		args = append(args, "--appendonly", "yes", "--appendfsync", s.opts.Fsync)
	} else {
		args = append(args, "--appendonly", "no")
	}
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		if err = s.startOnce(args); err == nil {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	return err
}

func (s *Server) startOnce(args []string) error {
	cmd := exec.Command(s.bin, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		ok := false
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock() // not held by Start while it waits for ready (see below)
			s.log = append(s.log, line)
			if len(s.log) > 50 {
				s.log = s.log[len(s.log)-50:]
			}
			s.mu.Unlock()
			if !ok && strings.Contains(line, "Ready to accept connections") {
				ok = true
				ready <- true
			}
		}
		if !ok {
			ready <- false
		}
		_ = cmd.Wait()
		close(done)
	}()
	// The reader goroutine takes s.mu to keep the log: release it while
	// waiting, so that a server that prints a lot cannot deadlock Start.
	s.mu.Unlock()
	var ok bool
	select {
	case ok = <-ready:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
	}
	s.mu.Lock()
	if !ok {
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("redis-server on port %d did not become ready: %s", s.port, strings.Join(s.log, "\n"))
	}
	s.cmd, s.done = cmd, done
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis-server ping: %w", err)
	}
	return nil
}

// Kill kills the server with SIGKILL (no shutdown save, no AOF rewrite)
// and waits until it has exited. Killing a stopped server does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Wipe deletes the server's data (its AOF and any dump): the next Start
// begins empty, as a Redis that lost its volume. The server must be
// stopped.
func (s *Server) Wipe() error {
	if s.Running() {
		return errors.New("redistest: wipe a running server")
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(s.dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// Log returns the last lines redis-server printed.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.log, "\n")
}
