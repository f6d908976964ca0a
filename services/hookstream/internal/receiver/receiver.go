// Package receiver is the webhook receiver built into `hookstream dev`: it
// logs every webhook it gets and keeps the last ones for GET, so that a first
// run shows Hookstream at work without any other server.
package receiver

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Received is one webhook the receiver got.
type Received struct {
	At      time.Time         `json:"at"`
	Path    string            `json:"path"`
	Query   string            `json:"query,omitempty"`
	Headers map[string]string `json:"headers"`
	Body    json.RawMessage   `json:"body,omitempty"`
	Text    string            `json:"text,omitempty"`
}

// Receiver keeps the last Keep webhooks.
type Receiver struct {
	Keep int
	// OnReceive, if set, is told of every webhook (after it is stored).
	OnReceive func(Received)
	log       *slog.Logger
	mu        sync.Mutex
	got       []Received
}

// New returns a receiver that logs to log.
func New(log *slog.Logger) *Receiver { return &Receiver{Keep: 100, log: log} }

// Register serves POST|PUT /dev/receiver/... (receive) and GET /dev/receiver
// (the last webhooks, newest last).
func (r *Receiver) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /dev/receiver/{path...}", r.receive)
	mux.HandleFunc("PUT /dev/receiver/{path...}", r.receive)
	mux.HandleFunc("GET /dev/receiver", func(w http.ResponseWriter, _ *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(r.got)
	})
}

func (r *Receiver) receive(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rec := Received{At: time.Now().UTC(), Path: req.URL.Path, Query: req.URL.RawQuery, Headers: map[string]string{}}
	for _, h := range []string{"Content-Type", "User-Agent", "webhook-id", "webhook-timestamp", "webhook-signature", "traceparent"} {
		if v := req.Header.Get(h); v != "" {
			rec.Headers[h] = v
		}
	}
	if json.Valid(body) {
		rec.Body = body
	} else {
		rec.Text = string(body)
	}
	r.mu.Lock()
	r.got = append(r.got, rec)
	if len(r.got) > r.Keep {
		r.got = r.got[len(r.got)-r.Keep:]
	}
	r.mu.Unlock()
	r.log.Info("dev receiver got a webhook", "component", "dev-receiver", "path", rec.Path, "webhook_id", rec.Headers["webhook-id"], "body", string(body))
	if r.OnReceive != nil {
		r.OnReceive(rec)
	}
	w.WriteHeader(http.StatusNoContent)
}
