package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
)

// Manager runs services that were given to it in dependency order (each after
// the ones it needs). It starts them one after another, waiting for each to
// run, and stops them in reverse order, waiting for each to finish, so that a
// consumer drains before the producer it writes through goes away.
type Manager struct {
	services []*Service
	log      *slog.Logger
	stopping atomic.Bool
}

// NewManager returns a manager for services, which must be ordered so that
// every service comes after its dependencies.
func NewManager(log *slog.Logger, services ...*Service) *Manager {
	return &Manager{services: services, log: log}
}

// Ready reports whether every service runs and no stop has been requested.
func (m *Manager) Ready() bool {
	if m.stopping.Load() {
		return false
	}
	for _, s := range m.services {
		if ok, _ := s.Ready(); !ok {
			return false
		}
	}
	return true
}

// Detail returns each service's readiness in words, for /readyz: its phase,
// or why a running service is not ready.
func (m *Manager) Detail() map[string]string {
	out := make(map[string]string, len(m.services))
	for _, s := range m.services {
		_, why := s.Ready()
		out[s.Name()] = why
	}
	return out
}

// Run starts every service, then waits until ctx ends or a service stops on
// its own, then stops them all in reverse order. It returns the first
// failure. Cancelling ctx is how a graceful shutdown is requested; the
// services' own work is not cut short by it.
func (m *Manager) Run(ctx context.Context) error {
	svcCtx := context.WithoutCancel(ctx)
	started := make([]*Service, 0, len(m.services))
	var runErr error
	for _, s := range m.services {
		if ctx.Err() != nil {
			break
		}
		m.log.Debug("starting", "component", s.Name())
		if err := s.StartAsync(svcCtx); err != nil {
			runErr = err
			break
		}
		started = append(started, s)
		if err := awaitRunningOrCancel(ctx, s); err != nil {
			if ctx.Err() == nil {
				runErr = err
			}
			break
		}
		m.log.Info("running", "component", s.Name())
	}
	if runErr == nil && ctx.Err() == nil {
		runErr = m.wait(ctx, started)
	}
	m.stopping.Store(true)
	stopErr := m.stop(started, runErr)
	return errors.Join(runErr, stopErr)
}

func awaitRunningOrCancel(ctx context.Context, s *Service) error {
	err := s.AwaitRunning(ctx)
	if err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// wait blocks until ctx ends or any service terminates; a service that ends
// on its own while the others run is an error, even when clean.
func (m *Manager) wait(ctx context.Context, started []*Service) error {
	done := make(chan *Service, len(started))
	for _, s := range started {
		go func() {
			select {
			case <-s.Terminated():
				done <- s
			case <-ctx.Done():
			}
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case s := <-done:
		if err := s.FailureCase(); err != nil {
			return err
		}
		return fmt.Errorf("service %s stopped unexpectedly", s.Name())
	}
}

// stop stops started in reverse order and returns their failures, leaving out
// reported, which Run already returns.
func (m *Manager) stop(started []*Service, reported error) error {
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		s := started[i]
		m.log.Debug("stopping", "component", s.Name())
		s.StopAsync()
		if err := s.AwaitTerminated(context.Background()); err != nil && err != reported {
			errs = append(errs, err)
		}
		m.log.Info("stopped", "component", s.Name())
	}
	return errors.Join(errs...)
}

// Stopping reports whether a stop has been requested.
func (m *Manager) Stopping() bool { return m.stopping.Load() }
