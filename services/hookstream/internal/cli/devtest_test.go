package cli

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hookstream/hookstream/services/hookstream/internal/process"
)

// inProcessDev is `hookstream dev` running in the test's process.
type inProcessDev struct {
	p         *process.Process
	kafkaAddr string
}

// startInProcessDev runs dev with manifests on free ports, in memory, until
// the test ends.
func startInProcessDev(tb testing.TB, manifests string, opts process.Options) *inProcessDev {
	tb.Helper()
	dir := tb.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.yaml"), []byte(manifests), 0o600); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	d := &inProcessDev{}
	go func() {
		done <- dev([]string{"--ephemeral", "--kafka-port", "0", "--listen", "127.0.0.1:0", "-f", dir, "--log.level", "error"}, io.Discard, io.Discard, devHooks{
			ctx: ctx, ready: ready, options: opts,
			started: func(p *process.Process, addr string) { d.p, d.kafkaAddr = p, addr },
		})
	}()
	tb.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		tb.Fatalf("dev: %v", err)
	case <-time.After(60 * time.Second):
		tb.Fatal("dev not ready in 60s")
	}
	return d
}
