// Package service gives every Hookstream component the same lifecycle:
// new → starting → running → stopping → terminated (or failed), after the
// services of Grafana's dskit. A Manager starts services in dependency order
// and stops them in reverse.
package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// State is the phase a Service is in.
type State int

// The phases, in the order a service goes through them.
const (
	StateNew State = iota
	StateStarting
	StateRunning
	StateStopping
	StateTerminated
	StateFailed
)

func (s State) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateStarting:
		return "starting"
	case StateRunning:
		return "running"
	case StateStopping:
		return "stopping"
	case StateTerminated:
		return "terminated"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// StartingFn prepares the service (open stores, create topics, restore
// state). Its context is cancelled when the service is asked to stop before it
// is running.
type StartingFn func(ctx context.Context) error

// RunningFn does the service's work until ctx is cancelled, which is how a
// stop is requested. It must then finish in-flight work (and commit what it
// consumed) before returning; nil means a clean stop.
type RunningFn func(ctx context.Context) error

// StoppingFn releases what StartingFn acquired. failure is the error that
// made the service fail, or nil on a clean stop. It always runs once the
// service has started, even when StartingFn or RunningFn failed.
type StoppingFn func(failure error) error

// Service is one component with a lifecycle. All methods are safe for
// concurrent use.
type Service struct {
	name     string
	starting StartingFn
	running  RunningFn
	stopping StoppingFn

	mu      sync.Mutex
	state   State
	failure error
	cancel  context.CancelFunc
	started bool

	readiness func() (bool, string)

	runningCh    chan struct{} // closed when running is reached (or skipped)
	terminatedCh chan struct{} // closed when terminated or failed
}

// New returns a service in state StateNew. Any of the functions may be nil.
func New(name string, starting StartingFn, running RunningFn, stopping StoppingFn) *Service {
	return &Service{
		name:         name,
		starting:     starting,
		running:      running,
		stopping:     stopping,
		runningCh:    make(chan struct{}),
		terminatedCh: make(chan struct{}),
	}
}

// Name is the component name used in logs and metrics.
func (s *Service) Name() string { return s.name }

// State returns the current phase.
func (s *Service) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// FailureCase returns the error that made the service fail, if it failed.
func (s *Service) FailureCase() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

// StartAsync begins starting the service in its own goroutine. ctx bounds the
// whole life of the service: cancelling it is the same as StopAsync. Calling
// it twice is an error.
func (s *Service) StartAsync(ctx context.Context) error {
	s.mu.Lock()
	if s.started {
		s.mu.Unlock()
		return fmt.Errorf("service %s: already started", s.name)
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.state = StateStarting
	s.mu.Unlock()
	go s.main(ctx)
	return nil
}

func (s *Service) main(ctx context.Context) {
	var err error
	if s.starting != nil {
		err = s.starting(ctx)
		if err == nil && ctx.Err() != nil {
			err = ctx.Err()
		}
	}
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			err = nil // stopped while starting: not a failure
		} else {
			err = fmt.Errorf("%s: starting: %w", s.name, err)
		}
		s.finish(err, true)
		return
	}
	s.setState(StateRunning)
	close(s.runningCh)
	if s.running != nil {
		err = s.running(ctx)
		if err != nil && !(errors.Is(err, context.Canceled) && ctx.Err() != nil) {
			err = fmt.Errorf("%s: running: %w", s.name, err)
		} else {
			err = nil
		}
	} else {
		<-ctx.Done()
	}
	s.finish(err, false)
}

func (s *Service) finish(err error, closeRunning bool) {
	s.setState(StateStopping)
	if s.stopping != nil {
		if serr := s.stopping(err); serr != nil && err == nil {
			err = fmt.Errorf("%s: stopping: %w", s.name, serr)
		}
	}
	s.mu.Lock()
	if err != nil {
		s.state, s.failure = StateFailed, err
	} else {
		s.state = StateTerminated
	}
	s.cancel()
	s.mu.Unlock()
	if closeRunning {
		close(s.runningCh)
	}
	close(s.terminatedCh)
}

func (s *Service) setState(st State) {
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
}

// StopAsync asks the service to stop. Safe to call in any state.
func (s *Service) StopAsync() {
	s.mu.Lock()
	cancel := s.cancel
	if !s.started {
		s.started = true
		s.state = StateTerminated
		close(s.runningCh)
		close(s.terminatedCh)
	}
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// AwaitRunning waits until the service runs. It returns an error when the
// service stopped or failed first, or when ctx ends.
func (s *Service) AwaitRunning(ctx context.Context) error {
	select {
	case <-s.runningCh:
	case <-ctx.Done():
		return ctx.Err()
	}
	switch st := s.State(); st {
	case StateRunning:
		return nil
	case StateFailed:
		return s.FailureCase()
	default:
		return fmt.Errorf("service %s is %s, not running", s.name, st)
	}
}

// AwaitTerminated waits until the service has stopped and returns its
// failure, if any.
func (s *Service) AwaitTerminated(ctx context.Context) error {
	select {
	case <-s.terminatedCh:
		return s.FailureCase()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SetReadiness installs a check that a running service must also pass to
// count as ready (for example "not restoring state"). The string says why
// it is not ready. Set it before StartAsync.
func (s *Service) SetReadiness(f func() (ready bool, why string)) {
	s.mu.Lock()
	s.readiness = f
	s.mu.Unlock()
}

// Ready reports whether the service runs and passes its readiness check,
// and otherwise why not.
func (s *Service) Ready() (bool, string) {
	s.mu.Lock()
	st, f := s.state, s.readiness
	s.mu.Unlock()
	if st != StateRunning {
		return false, st.String()
	}
	if f != nil {
		if ok, why := f(); !ok {
			return false, why
		}
	}
	return true, st.String()
}

// Terminated is closed once the service has stopped or failed.
func (s *Service) Terminated() <-chan struct{} { return s.terminatedCh }
