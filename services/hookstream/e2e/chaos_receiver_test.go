package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// Receiver modes: how the chaos receiver answers while a fault lasts.
const (
	chaosRecvOK      = "ok"
	chaosRecv500     = "500"     // 500 Internal Server Error
	chaosRecv429     = "429"     // 429 Too Many Requests with Retry-After
	chaosRecvHang    = "hang"    // holds the request past the webhook's timeout
	chaosRecvRefused = "refused" // no listener: connections are refused

	chaosAnswerCut = "cut" // a request whose body was cut short
)

// chaosHook is one request the receiver got.
type chaosHook struct {
	ID     string // webhook-id
	Cause  string // the cause echoed in the body, "" when none was found
	Path   string
	At     time.Time
	Answer string // "200", "500", "429", "hang" or "cut" (the body never arrived whole)
	SigOK  bool
}

// OK reports whether the receiver accepted the webhook (answered 2xx).
func (h chaosHook) OK() bool { return h.Answer == "200" }

// chaosReceiver is the webhook endpoint under chaos: a real HTTP server on
// a fixed port that can answer 500s, 429s with Retry-After, hang past the
// webhook's timeout, or stop listening (connections refused) and listen
// again on the same port. It verifies every signature and records every
// request with the cause found in its body.
type chaosReceiver struct {
	addr       string
	retryAfter int // seconds, on 429
	hang       time.Duration

	mu    sync.Mutex
	mode  string
	srv   *http.Server
	hooks []chaosHook
}

func newChaosReceiver(port int, retryAfter int, hang time.Duration) (*chaosReceiver, error) {
	r := &chaosReceiver{addr: fmt.Sprintf("127.0.0.1:%d", port), retryAfter: retryAfter, hang: hang, mode: chaosRecvOK}
	if err := r.listen(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *chaosReceiver) url() string { return "http://" + r.addr }

// listen serves on the receiver's port (again). Called with r.mu not held.
func (r *chaosReceiver) listen() error {
	var ln net.Listener
	var err error
	// Go listeners set SO_REUSEADDR: the port binds again at once after a
	// close; retry briefly in case the kernel is still releasing it.
	for i := 0; i < 50; i++ {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("receiver: listen again on %s: %w", r.addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// setMode changes how requests are answered from now on. Refusing closes
// the listener and every open connection (kept-alive ones included);
// leaving it listens again on the same port.
func (r *chaosReceiver) setMode(mode string) error {
	r.mu.Lock()
	prev := r.mode
	r.mode = mode
	srv := r.srv
	r.mu.Unlock()
	switch {
	case mode == chaosRecvRefused && prev != chaosRecvRefused:
		return srv.Close()
	case mode != chaosRecvRefused && prev == chaosRecvRefused:
		return r.listen()
	}
	return nil
}

func (r *chaosReceiver) close() {
	r.mu.Lock()
	srv := r.srv
	r.mode = chaosRecvRefused
	r.mu.Unlock()
	_ = srv.Close()
}

func (r *chaosReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	h := chaosHook{ID: req.Header.Get("webhook-id"), Cause: chaosCauseOf(body), Path: req.URL.Path, At: time.Now(), SigOK: verifySignature(req.Header, body)}
	r.mu.Lock()
	mode := r.mode
	r.mu.Unlock()
	if err != nil {
		// The sender died mid-request (a killed dispatcher): a truncated
		// body is not a webhook, and nobody reads the answer.
		h.Answer, h.Cause, h.SigOK = chaosAnswerCut, "", true
		w.WriteHeader(http.StatusBadRequest)
		r.mu.Lock()
		r.hooks = append(r.hooks, h)
		r.mu.Unlock()
		return
	}
	switch mode {
	case chaosRecv500:
		h.Answer = "500"
		w.WriteHeader(http.StatusInternalServerError)
	case chaosRecv429:
		h.Answer = "429"
		w.Header().Set("Retry-After", fmt.Sprint(r.retryAfter))
		w.WriteHeader(http.StatusTooManyRequests)
	case chaosRecvHang:
		// Past the webhook's timeout the dispatcher gives up and closes
		// the connection; the request is not accepted either way.
		h.Answer = "hang"
		select {
		case <-req.Context().Done():
		case <-time.After(r.hang):
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	default:
		h.Answer = "200"
		w.WriteHeader(http.StatusOK)
	}
	r.mu.Lock()
	r.hooks = append(r.hooks, h)
	r.mu.Unlock()
}

func (r *chaosReceiver) all() []chaosHook {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]chaosHook(nil), r.hooks...)
}

// accepted returns the causes accepted (2xx) so far.
func (r *chaosReceiver) accepted() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for _, h := range r.hooks {
		if h.OK() {
			out[h.Cause] = true
		}
	}
	return out
}

// chaosCauseOf finds the cause a webhook body echoes: a Liquid body's
// top-level "cause", or the cause event's property in a profileVariables
// body (profiles[0].Event_properties.cause).
func chaosCauseOf(body []byte) string {
	var m struct {
		Cause    string `json:"cause"`
		Profiles []struct {
			EventProperties struct {
				Cause string `json:"cause"`
			} `json:"Event_properties"`
		} `json:"profiles"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if dec.Decode(&m) != nil {
		return ""
	}
	if m.Cause != "" {
		return m.Cause
	}
	if len(m.Profiles) == 1 {
		return m.Profiles[0].EventProperties.Cause
	}
	return ""
}
