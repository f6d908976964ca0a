// Package redistest starts Redis servers for tests: a real redis-server on a
// free port, or miniredis, so that one suite can run against both.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/testenv"
)

// Backend names a Redis implementation.
type Backend string

// The backends every Redis-backed suite runs against.
const (
	Real      Backend = "redis-server"
	Miniredis Backend = "miniredis"
)

// Backends lists them, for table-driven suites.
var Backends = []Backend{Miniredis, Real}

// Start starts a Redis of backend b for the test and returns its address.
func Start(t testing.TB, b Backend) string {
	t.Helper()
	if b == Miniredis {
		e, err := redisconn.StartEmbedded()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		return e.Addr()
	}
	return StartReal(t)
}

// StartReal starts redis-server on a free loopback port, without
// persistence, stopped when the test ends.
func StartReal(t testing.TB) string {
	t.Helper()
	bin := testenv.RequireTool(t, "redis-server", "redis-server")
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		ready := make(chan bool, 1)
		go func() {
			sc := bufio.NewScanner(stdout)
			ok := false
			for sc.Scan() {
				if !ok && strings.Contains(sc.Text(), "Ready to accept connections") {
					ok = true
					ready <- true
				}
			}
			if !ok {
				ready <- false
			}
		}()
		select {
		case ok := <-ready:
			if !ok {
				_ = cmd.Wait()
				continue // port taken between probe and bind: try another
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatal("redis-server did not become ready in 10s")
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		c := redis.NewClient(&redis.Options{Addr: addr})
		defer c.Close()
		if err := c.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("redis-server ping: %v", err)
		}
		return addr
	}
	t.Fatal("could not start redis-server on a free port")
	return ""
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
