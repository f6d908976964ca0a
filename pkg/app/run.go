package app

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/hookstream/hookstream/pkg/service"
)

// Run runs the services under a manager until SIGTERM or SIGINT, then stops
// them gracefully (in-flight work finishes, offsets are committed). A second
// signal exits at once with status 1. /readyz on server turns 503 as soon as
// the first signal arrives.
func Run(ctx context.Context, log *slog.Logger, server *Server, svcs []*service.Service) error {
	return RunManager(ctx, log, server, service.NewManager(log, svcs...))
}

// RunManager is Run with a manager the caller made (to ask it for
// readiness).
func RunManager(ctx context.Context, log *slog.Logger, server *Server, mgr *service.Manager) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if server != nil {
		server.SetReady(func() (bool, map[string]string) {
			detail := mgr.Detail()
			if ctx.Err() != nil {
				detail["process"] = "shutting down"
			}
			return ctx.Err() == nil && mgr.Ready(), detail
		})
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	// The first signal, or the caller's cancel, begins the graceful stop;
	// a signal during it exits at once. The goroutine ends with RunManager.
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case s := <-sigs:
			log.Info("shutting down: finishing in-flight work and committing offsets; signal again to exit at once", "signal", s.String())
			cancel()
		case <-ctx.Done():
		case <-done:
			return
		}
		select {
		case s := <-sigs:
			log.Error("second signal: exiting now without draining", "signal", s.String())
			os.Exit(1)
		case <-done:
		}
	}()
	return mgr.Run(ctx)
}
