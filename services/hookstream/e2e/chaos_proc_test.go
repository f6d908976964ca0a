package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// chaosService is one `hookstream serve TARGET` under a supervisor that, as
// a Kubernetes restart policy does, starts it again whenever it exits,
// unless a fault holds it down. Every start appends to one log file.
type chaosService struct {
	name    string
	args    []string
	env     []string
	logPath string
	dataDir string // the Pebble directory of the evaluator or the timer, "" for none

	mu       sync.Mutex
	cond     *sync.Cond
	proc     *chaosProc
	held     bool
	stopped  bool
	starts   int
	kills    int
	crashes  []string // exits the harness did not cause
	finished chan struct{}
}

type chaosProc struct {
	cmd    *exec.Cmd
	http   string
	done   chan struct{}
	err    error
	killed bool
}

func newChaosService(name string, args, env []string, logPath, dataDir string) *chaosService {
	s := &chaosService{name: name, args: args, env: env, logPath: logPath, dataDir: dataDir, finished: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	go s.supervise()
	return s
}

func chaosFreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (s *chaosService) logf(format string, args ...any) {
	f, err := os.OpenFile(s.logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return
	}
	fmt.Fprintf(f, "=== chaos %s: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, args...))
	f.Close()
}

func (s *chaosService) supervise() {
	defer close(s.finished)
	backoff := time.Duration(0)
	for {
		s.mu.Lock()
		for s.held && !s.stopped {
			s.cond.Wait()
		}
		if s.stopped {
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if backoff > 0 {
			time.Sleep(backoff)
		}
		p, err := s.startOnce()
		if err != nil {
			s.logf("start failed: %v", err)
			backoff = time.Second
			continue
		}
		<-p.done
		s.mu.Lock()
		killed, stopped := p.killed, s.stopped
		if !killed && !stopped {
			s.crashes = append(s.crashes, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05"), p.err))
		}
		s.mu.Unlock()
		if !killed && !stopped {
			s.logf("exited by itself: %v; restarting in 1s", p.err)
			backoff = time.Second
		} else {
			backoff = 0
		}
	}
}

func (s *chaosService) startOnce() (*chaosProc, error) {
	addr, err := chaosFreeAddr()
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(s.logPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append(append([]string(nil), s.args...), "-server.listen-address="+addr)
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held || s.stopped {
		return nil, fmt.Errorf("held down")
	}
	s.starts++
	fmt.Fprintf(logf, "=== chaos %s: start #%d: %s\n", time.Now().Format("15:04:05.000"), s.starts, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &chaosProc{cmd: cmd, http: addr, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	s.proc = p
	return p, nil
}

// kill kills the running process with SIGKILL and keeps the service down
// until release.
func (s *chaosService) kill() {
	s.mu.Lock()
	s.held = true
	p := s.proc
	if p != nil {
		p.killed = true
	}
	s.kills++
	s.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	s.logf("killed with SIGKILL")
}

// release lets the supervisor start the service again.
func (s *chaosService) release() {
	s.mu.Lock()
	s.held = false
	s.cond.Broadcast()
	s.mu.Unlock()
}

// stop ends the supervisor and kills the process (the end of the test).
func (s *chaosService) stop() {
	s.mu.Lock()
	s.stopped = true
	p := s.proc
	s.cond.Broadcast()
	s.mu.Unlock()
	if p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	<-s.finished
}

// ready reports whether the current process answers /readyz with 200.
func (s *chaosService) ready() bool {
	s.mu.Lock()
	p := s.proc
	held := s.held
	s.mu.Unlock()
	if p == nil || held {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.http+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// httpAddr is the current process's API address.
func (s *chaosService) httpAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return ""
	}
	return s.proc.http
}

// waitReady waits until the service is ready or timeout passes.
func (s *chaosService) waitReady(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s.ready() {
			return true
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false
}

// counts returns the restarts (starts after the first), kills and
// unexpected exits.
func (s *chaosService) counts() (restarts, kills int, crashes []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return max(0, s.starts-1), s.kills, append([]string(nil), s.crashes...)
}

// tail returns the last n lines of the service's log, without franz-go's
// debug chatter (the whole log is in the logs directory).
func (s *chaosService) tail(n int) string {
	b, _ := os.ReadFile(s.logPath)
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		if strings.Contains(l, "lib=franz-go") && strings.Contains(l, "level=DEBUG") {
			continue
		}
		lines = append(lines, l)
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
