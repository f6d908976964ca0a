package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hookstream/hookstream/pkg/app"
	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
)

// Writer changes the manifests on the campaigns topic; *catalog.Writer is
// one. Apply validates (returning manifest.Problems when invalid) and, unless
// dryRun, writes and waits until the catalog reflects the write.
type Writer interface {
	Apply(ctx context.Context, objs []manifest.Object, dryRun bool) ([]catalog.Change, error)
	Delete(ctx context.Context, kind, name string) (bool, error)
}

// DefaultAdminMaxBodyBytes bounds a POST /v1/apply body.
const DefaultAdminMaxBodyBytes = 4 << 20

// Admin serves the control-plane API of CONTRACT.md section 4 on the
// ingest service: POST /v1/apply (?dryRun=true), GET /v1/{kind},
// GET|DELETE /v1/{kind}/{name} and POST /v1/campaigns/{name}/pause|resume,
// behind the admin bearer tokens. Reads come from the process's catalog;
// writes go through the Writer. Errors are JSON {"error": "..."}.
//
// Writes from one Admin are serialised, so that two applies of the same
// object through one process never get the same generation. Admin is safe
// for concurrent use.
type Admin struct {
	cat    *catalog.Catalog
	writer Writer
	tokens []string
	log    *slog.Logger

	// MaxBodyBytes bounds a POST /v1/apply body, default
	// DefaultAdminMaxBodyBytes; larger bodies get 413.
	MaxBodyBytes int64
	// Ready, when set, gates every endpoint: until it reports true (the
	// catalog has been loaded from the topic) requests get 503, so that
	// nothing is read from or applied to a partial view. nil: always ready.
	Ready func() bool

	mu sync.Mutex
}

// NewAdmin returns the admin API over cat, writing through w. tokens are the
// accepted bearer tokens; none means no authentication, which is only
// sensible on loopback (`hookstream dev`) and is logged as a warning.
func NewAdmin(cat *catalog.Catalog, w Writer, tokens []string, log *slog.Logger) *Admin {
	log = log.With("component", "admin")
	if len(tokens) == 0 {
		log.Warn("admin API has no tokens (ingest.admin_tokens): anyone who can reach the HTTP port can change campaigns")
	}
	return &Admin{cat: cat, writer: w, tokens: tokens, log: log, MaxBodyBytes: DefaultAdminMaxBodyBytes}
}

// KafkaWriter returns a Writer that opens a Kafka client for each write and
// closes it afterwards: applies are rare, and the admin API then holds no
// connection and no goroutine between them, independently of the ingest
// consumer. Dry runs never connect.
func KafkaWriter(cfg kafka.Config, log *slog.Logger, cat *catalog.Catalog) Writer {
	return &kafkaWriter{cfg: cfg, log: log, cat: cat}
}

type kafkaWriter struct {
	cfg kafka.Config
	log *slog.Logger
	cat *catalog.Catalog
}

func (k *kafkaWriter) Apply(ctx context.Context, objs []manifest.Object, dryRun bool) ([]catalog.Change, error) {
	if dryRun {
		return catalog.NewWriter(nil, k.cfg, k.cat).Apply(ctx, objs, true)
	}
	cl, err := kafka.NewClient(k.cfg, k.log, "admin")
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return catalog.NewWriter(cl, k.cfg, k.cat).Apply(ctx, objs, false)
}

func (k *kafkaWriter) Delete(ctx context.Context, kind, name string) (bool, error) {
	cl, err := kafka.NewClient(k.cfg, k.log, "admin")
	if err != nil {
		return false, err
	}
	defer cl.Close()
	return catalog.NewWriter(cl, k.cfg, k.cat).Delete(ctx, kind, name)
}

// Register adds the admin routes to mux. Wrong methods on these paths get a
// JSON 405 with an Allow header.
func (a *Admin) Register(mux *http.ServeMux) {
	// "/v1/apply" cannot have a catch-all of its own: it would conflict
	// with "GET /v1/{kind}". Other methods on it land on "/v1/{kind}".
	mux.HandleFunc("POST /v1/apply", a.guard(a.apply))
	mux.HandleFunc("GET /v1/{kind}", a.guard(a.list))
	mux.HandleFunc("/v1/{kind}", func(w http.ResponseWriter, r *http.Request) {
		if postOnly[r.PathValue("kind")] {
			notAllowed("POST")(w, r)
			return
		}
		notAllowed("GET")(w, r)
	})
	mux.HandleFunc("GET /v1/{kind}/{name}", a.guard(a.get))
	mux.HandleFunc("DELETE /v1/{kind}/{name}", a.guard(a.delete))
	mux.HandleFunc("/v1/{kind}/{name}", notAllowed("GET, DELETE"))
	for _, action := range []string{"pause", "resume"} {
		mux.HandleFunc("POST /v1/campaigns/{name}/"+action, a.guard(a.setState))
		mux.HandleFunc("/v1/campaigns/{name}/"+action, notAllowed("POST"))
	}
}

func notAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		app.WriteError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s %s: method not allowed (use %s)", r.Method, r.URL.Path, allow))
	}
}

// Authorize checks the admin token as the admin endpoints do, answering
// 401 itself when it fails; other components' admin routes use it.
func (a *Admin) Authorize(w http.ResponseWriter, r *http.Request) bool {
	if Authorized(r, a.tokens) {
		return true
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="hookstream"`)
	app.WriteError(w, http.StatusUnauthorized, "missing or invalid admin token (Authorization: Bearer TOKEN)")
	return false
}

// guard checks readiness and the bearer token before h.
func (a *Admin) guard(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.Authorize(w, r) {
			return
		}
		if a.Ready != nil && !a.Ready() {
			w.Header().Set("Retry-After", "1")
			app.WriteError(w, http.StatusServiceUnavailable, "not ready: the catalog is still loading from Kafka, try again")
			return
		}
		h(w, r)
	}
}

// kinds maps the path names of CONTRACT.md section 4 (and, for
// convenience, their singulars) to kinds.
var kinds = map[string]string{
	"webhooks": manifest.KindWebhook, "webhook": manifest.KindWebhook,
	"segments": manifest.KindSegment, "segment": manifest.KindSegment,
	"campaigns": manifest.KindCampaign, "campaign": manifest.KindCampaign,
}

// postOnly are the /v1/ endpoints that only take POST.
var postOnly = map[string]bool{"apply": true, "events": true}

func kindOf(w http.ResponseWriter, r *http.Request) (string, bool) {
	if postOnly[r.PathValue("kind")] {
		notAllowed("POST")(w, r)
		return "", false
	}
	k, ok := kinds[strings.ToLower(r.PathValue("kind"))]
	if !ok {
		app.WriteError(w, http.StatusNotFound, fmt.Sprintf("unknown kind %q: use webhooks, segments or campaigns", r.PathValue("kind")))
	}
	return k, ok
}

// Result is what an apply did, or with dryRun would do, to one object.
type Result struct {
	Kind       string `json:"kind"`
	Name       string `json:"name"`
	Action     string `json:"action"`
	Generation int64  `json:"generation"`
	// Changed lists the fields that differ from the applied object, for
	// "configured" ones, like "spec.trigger.within".
	Changed []string `json:"changed,omitempty"`
}

// ApplyResponse is the body of a successful POST /v1/apply.
type ApplyResponse struct {
	DryRun  bool     `json:"dryRun"`
	Results []Result `json:"results"`
}

// ProblemsResponse is the body of a 400 for invalid manifests: error holds
// every problem, one per line; problems has them one by one.
type ProblemsResponse struct {
	Error    string            `json:"error"`
	Problems manifest.Problems `json:"problems"`
}

// manifestTypes are the media types POST /v1/apply accepts; none at all is
// accepted too (the body says what it is).
var manifestTypes = []string{"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "application/json", "text/plain", "application/octet-stream"}

func (a *Admin) apply(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !slices.Contains(manifestTypes, mt) {
			app.WriteError(w, http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Type %q is not accepted: send manifests as application/yaml or application/json", ct))
			return
		}
	}
	dryRun := false
	if v := r.URL.Query().Get("dryRun"); v != "" {
		var err error
		if dryRun, err = strconv.ParseBool(v); err != nil {
			app.WriteError(w, http.StatusBadRequest, fmt.Sprintf("dryRun must be true or false, got %q", v))
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		app.WriteError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes: apply fewer manifests at a time", a.MaxBodyBytes))
		return
	case err != nil:
		app.WriteError(w, http.StatusBadRequest, "reading body: "+err.Error())
		return
	}
	objs, err := manifest.Parse(body, "")
	if err != nil {
		writeProblems(w, err)
		return
	}
	if len(objs) == 0 {
		app.WriteError(w, http.StatusBadRequest, "no manifests in the body")
		return
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	before := make([]map[string]any, len(objs))
	for i, o := range objs {
		if cur, ok := a.cat.Get(o.GetKind(), o.GetMetadata().Name); ok {
			before[i] = asMap(cur)
		}
	}
	changes, err := a.writer.Apply(r.Context(), objs, dryRun)
	if err != nil {
		a.writeError(w, err)
		return
	}
	resp := ApplyResponse{DryRun: dryRun, Results: make([]Result, 0, len(changes))}
	for i, c := range changes {
		res := Result{Kind: c.Kind, Name: c.Name, Action: c.Action, Generation: c.Generation}
		if c.Action == catalog.Configured && i < len(objs) && before[i] != nil {
			res.Changed = changedPaths(before[i], asMap(objs[i]))
		}
		resp.Results = append(resp.Results, res)
		if !dryRun && c.Action != catalog.Unchanged {
			a.log.Info(fmt.Sprintf("%s/%s %s", c.Kind, c.Name, c.Action), "generation", c.Generation, "changed", res.Changed)
		}
	}
	app.WriteJSON(w, http.StatusOK, resp)
}

func writeProblems(w http.ResponseWriter, err error) {
	var probs manifest.Problems
	if !errors.As(err, &probs) {
		app.WriteError(w, http.StatusBadRequest, err.Error())
		return
	}
	app.WriteJSON(w, http.StatusBadRequest, ProblemsResponse{
		Error:    fmt.Sprintf("invalid manifests (%s):\n%s", plural(len(probs), "problem"), probs.Error()),
		Problems: probs,
	})
}

// writeError answers a failed write: invalid manifests are the caller's
// problem (400), anything else is Kafka's (503, try again).
func (a *Admin) writeError(w http.ResponseWriter, err error) {
	var probs manifest.Problems
	if errors.As(err, &probs) {
		writeProblems(w, err)
		return
	}
	a.log.Error("write to the campaigns topic failed", "err", err)
	app.WriteError(w, http.StatusServiceUnavailable, "not applied, try again: "+err.Error())
}

// ListResponse is the body of GET /v1/{kind}.
type ListResponse struct {
	Kind  string            `json:"kind"`
	Items []manifest.Object `json:"items"`
}

func (a *Admin) list(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	items := a.cat.List(kind)
	if items == nil {
		items = []manifest.Object{}
	}
	app.WriteJSON(w, http.StatusOK, ListResponse{Kind: kind, Items: items})
}

func (a *Admin) get(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	o, ok := a.cat.Get(kind, r.PathValue("name"))
	if !ok {
		app.WriteError(w, http.StatusNotFound, fmt.Sprintf("%s %q not found", kind, r.PathValue("name")))
		return
	}
	app.WriteJSON(w, http.StatusOK, o)
}

// DeleteResponse is the body of a successful DELETE /v1/{kind}/{name}.
type DeleteResponse struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Action string `json:"action"`
}

func (a *Admin) delete(w http.ResponseWriter, r *http.Request) {
	kind, ok := kindOf(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	a.mu.Lock()
	defer a.mu.Unlock()
	if users := a.users(kind, name); len(users) > 0 {
		app.WriteError(w, http.StatusConflict, fmt.Sprintf("%s %q is used by campaigns %s: change or delete them first", kind, name, strings.Join(users, ", ")))
		return
	}
	found, err := a.writer.Delete(r.Context(), kind, name)
	switch {
	case err != nil:
		a.writeError(w, err)
	case !found:
		app.WriteError(w, http.StatusNotFound, fmt.Sprintf("%s %q not found", kind, name))
	default:
		a.log.Info(fmt.Sprintf("%s/%s %s", kind, name, catalog.Deleted))
		app.WriteJSON(w, http.StatusOK, DeleteResponse{Kind: kind, Name: name, Action: catalog.Deleted})
	}
}

// users lists the campaigns that refer to a webhook or segment.
func (a *Admin) users(kind, name string) []string {
	var out []string
	for _, c := range a.cat.Campaigns() {
		s := c.Spec
		if (kind == manifest.KindWebhook && s.Webhook == name) || (kind == manifest.KindSegment && s.Who != nil && s.Who.Segment == name) {
			out = append(out, c.Metadata.Name)
		}
	}
	return out
}

// StateResponse is the body of POST /v1/campaigns/{name}/pause|resume.
type StateResponse struct {
	Result
	State string `json:"state"`
}

// setState re-applies a campaign with spec.state paused (pause) or active
// (resume); applying the state it already has is "unchanged".
func (a *Admin) setState(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	state := manifest.StateActive
	if strings.HasSuffix(r.URL.Path, "/pause") {
		state = manifest.StatePaused
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cur, ok := a.cat.Campaign(name)
	if !ok {
		app.WriteError(w, http.StatusNotFound, fmt.Sprintf("Campaign %q not found", name))
		return
	}
	o, err := manifest.Clone(cur)
	if err != nil {
		app.WriteError(w, http.StatusInternalServerError, err.Error())
		return
	}
	o.(*manifest.Campaign).Spec.State = state
	changes, err := a.writer.Apply(r.Context(), []manifest.Object{o}, false)
	if err != nil {
		a.writeError(w, err)
		return
	}
	c := changes[0]
	if c.Action != catalog.Unchanged {
		a.log.Info(fmt.Sprintf("Campaign/%s %s", name, state), "generation", c.Generation)
	}
	app.WriteJSON(w, http.StatusOK, StateResponse{Result: Result{Kind: c.Kind, Name: c.Name, Action: c.Action, Generation: c.Generation}, State: state})
}

// asMap is an object's stored JSON form as a generic map.
func asMap(o manifest.Object) map[string]any {
	raw, err := json.Marshal(o)
	if err != nil {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return nil
	}
	return m
}

// changedPaths lists the fields that differ between two stored forms,
// ignoring what the server sets (status, metadata.generation).
func changedPaths(before, after map[string]any) []string {
	var out []string
	var walk func(prefix string, x, y any)
	walk = func(prefix string, x, y any) {
		switch prefix {
		case "status", "metadata.generation":
			return
		}
		mx, okx := x.(map[string]any)
		my, oky := y.(map[string]any)
		if !okx || !oky {
			if !reflect.DeepEqual(x, y) {
				out = append(out, prefix)
			}
			return
		}
		keys := map[string]bool{}
		for k := range mx {
			keys[k] = true
		}
		for k := range my {
			keys[k] = true
		}
		sorted := make([]string, 0, len(keys))
		for k := range keys {
			sorted = append(sorted, k)
		}
		sort.Strings(sorted)
		for _, k := range sorted {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			walk(p, mx[k], my[k])
		}
	}
	walk("", before, after)
	return out
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
