package process

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/hookstream/hookstream/pkg/app"
	"github.com/hookstream/hookstream/pkg/catalog"
	"github.com/hookstream/hookstream/pkg/kafka"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/pkg/service"
	"github.com/hookstream/hookstream/pkg/stats"
	"github.com/hookstream/hookstream/pkg/telemetry"
	"github.com/hookstream/hookstream/services/dispatcher"
	"github.com/hookstream/hookstream/services/evaluator"
	"github.com/hookstream/hookstream/services/ingest"
	"github.com/hookstream/hookstream/services/timer"
)

// Module names. Each is also the component label in logs and metrics.
const (
	ModServer     = "server"
	ModTopics     = "topics"
	ModCatalog    = "catalog"
	ModApply      = "apply"
	ModIngest     = "ingest"
	ModEvaluator  = "evaluator"
	ModTimer      = "timer"
	ModDispatcher = "dispatcher"
	ModStats      = "stats"
	ModAll        = "all"
)

// Process is one Hookstream process being assembled.
type Process struct {
	Cfg     Config
	Log     *slog.Logger
	Metrics *telemetry.Metrics
	Tracing *telemetry.Tracing
	Server  *app.Server
	Catalog *catalog.Catalog
	// Manifests, when set, are applied to the campaigns topic at start
	// (`hookstream dev -f`).
	Manifests []manifest.Object

	modules app.Modules
	mu      sync.Mutex
	ready   func() bool
}

// Options change how a process is assembled (tests).
type Options struct {
	// Tracing overrides the OTEL_* environment (an in-memory exporter).
	Tracing telemetry.TracingOptions
}

// New registers the modules of a process with cfg. Tracing is set up first,
// so that every Kafka client and HTTP client made later carries it.
func New(cfg Config, log *slog.Logger, opts ...Options) (*Process, error) {
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	m, err := telemetry.NewMetrics()
	if err != nil {
		return nil, err
	}
	tr, err := telemetry.NewTracing(context.Background(), "hookstream-"+cfg.Target, o.Tracing)
	if err != nil {
		return nil, err
	}
	if tr.Enabled {
		log.Info("tracing on", "component", "hookstream")
	}
	p := &Process{Cfg: cfg, Log: log, Metrics: m, Tracing: tr, Catalog: catalog.New(log.With("component", "catalog"))}
	p.Server = app.NewServer(cfg.Server, log, m.Handler)
	p.register()
	return p, nil
}

func (p *Process) register() {
	cfg := &p.Cfg
	p.modules.Register(app.Module{Name: ModServer, Init: func() (*service.Service, error) { return p.Server.Service(), nil }})
	p.modules.Register(app.Module{Name: ModTopics, Init: func() (*service.Service, error) { return p.topicsService(), nil }})
	p.modules.Register(app.Module{Name: ModCatalog, Deps: []string{ModTopics}, Init: func() (*service.Service, error) {
		return catalog.NewFollower(cfg.Kafka, p.Log, p.Catalog), nil
	}})
	p.modules.Register(app.Module{Name: ModApply, Deps: []string{ModCatalog}, Init: func() (*service.Service, error) {
		return p.applyService(), nil
	}})
	p.modules.Register(app.Module{Name: ModStats, Deps: []string{ModTopics}, Init: func() (*service.Service, error) {
		return stats.NewAggregator(cfg.Kafka, redisconn.Open(cfg.Redis), p.Log).Service(), nil
	}})
	p.modules.Register(app.Module{Name: ModIngest, Target: true, Deps: []string{ModServer, ModTopics, ModApply, ModStats}, Init: func() (*service.Service, error) {
		if err := cfg.CheckAuth(); err != nil {
			return nil, err
		}
		in, err := ingest.New(cfg.Ingest, cfg.Kafka, p.Log, p.Metrics.Meter(ModIngest))
		if err != nil {
			return nil, err
		}
		in.Register(p.Server.Mux)
		svc := in.Service()
		adm := ingest.NewAdmin(p.Catalog, ingest.KafkaWriter(cfg.Kafka, p.Log, p.Catalog), cfg.Ingest.AdminTokens, p.Log)
		adm.Ready = func() bool { return svc.State() == service.StateRunning } // the catalog is loaded before ingest runs
		adm.Register(p.Server.Mux)
		rdb := redisconn.Open(cfg.Redis)
		// Stats of a campaign that is neither in the catalog nor counted
		// are a 404, not zeros; a deleted campaign's stay readable.
		(&stats.Reader{RDB: rdb, Exists: func(name string) bool { _, ok := p.Catalog.Campaign(name); return ok }}).Register(p.Server.Mux, adm.Authorize)
		// POST /v1/campaigns/{name}/test sends through the dispatcher's own
		// render and send path, from the API process.
		tester, err := dispatcher.NewTester(cfg.Dispatcher, p.Log, p.Catalog, rdb)
		if err != nil {
			return nil, err
		}
		testHandler := tester.Handler()
		p.Server.Mux.HandleFunc("POST /v1/campaigns/{name}/test", func(w http.ResponseWriter, r *http.Request) {
			if adm.Authorize(w, r) {
				testHandler.ServeHTTP(w, r)
			}
		})
		return svc, nil
	}})
	p.modules.Register(app.Module{Name: ModEvaluator, Target: true, Deps: []string{ModServer, ModTopics, ModApply}, Init: func() (*service.Service, error) {
		ev, err := evaluator.New(cfg.Evaluator, cfg.Kafka, p.Log, p.Catalog, p.Metrics.Meter(ModEvaluator), nil)
		if err != nil {
			return nil, err
		}
		return ev.Service(), nil
	}})
	p.modules.Register(app.Module{Name: ModTimer, Target: true, Deps: []string{ModServer, ModTopics, ModCatalog}, Init: func() (*service.Service, error) {
		t, err := timer.New(cfg.Timer, cfg.Kafka, p.Log, p.Metrics.Meter(ModTimer), p.Catalog, nil)
		if err != nil {
			return nil, err
		}
		return t.Service(), nil
	}})
	p.modules.Register(app.Module{Name: ModDispatcher, Target: true, Deps: []string{ModServer, ModTopics, ModApply}, Init: func() (*service.Service, error) {
		d, err := dispatcher.New(cfg.Dispatcher, cfg.Kafka, p.Log, p.Catalog, redisconn.Open(cfg.Redis), p.Metrics.Meter(ModDispatcher))
		if err != nil {
			return nil, err
		}
		return d.Service(), nil
	}})
	p.modules.Register(app.Module{Name: ModAll, Target: true, Deps: []string{ModIngest, ModEvaluator, ModTimer, ModDispatcher}})
}

// topicsService waits for Kafka and creates the contract's topics.
func (p *Process) topicsService() *service.Service {
	cfg := p.Cfg.Kafka
	return service.New(ModTopics, func(ctx context.Context) error {
		cl, err := kafka.NewUntracedClient(cfg, p.Log, "admin")
		if err != nil {
			return err
		}
		defer cl.Close()
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := kafka.Ping(pctx, cl); err != nil {
			return fmt.Errorf("brokers %v: %w", cfg.Brokers, err)
		}
		if !cfg.CreateTopics {
			return nil
		}
		return kafka.EnsureTopics(ctx, cl, int16(cfg.ReplicationFactor), cfg.TopicSpecs())
	}, nil, nil)
}

// applyService applies p.Manifests (if any) once the catalog is loaded.
func (p *Process) applyService() *service.Service {
	return service.New(ModApply, func(ctx context.Context) error {
		if len(p.Manifests) == 0 {
			return nil
		}
		cl, err := kafka.NewUntracedClient(p.Cfg.Kafka, p.Log, "apply")
		if err != nil {
			return err
		}
		defer cl.Close()
		changes, err := catalog.NewWriter(cl, p.Cfg.Kafka, p.Catalog).Apply(ctx, p.Manifests, false)
		if err != nil {
			return fmt.Errorf("apply manifests: %w", err)
		}
		for _, c := range changes {
			p.Log.Info(fmt.Sprintf("%s/%s %s", c.Kind, c.Name, c.Action), "component", ModApply, "generation", c.Generation)
		}
		return nil
	}, nil, nil)
}

// Services builds the services of the configured target, in start order.
func (p *Process) Services() ([]*service.Service, error) {
	return p.modules.Init(p.Cfg.Target)
}

// Ready reports whether every service of the process runs (after Run has
// started them).
func (p *Process) Ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ready != nil && p.ready()
}

// Run runs the configured target until SIGTERM or SIGINT.
func (p *Process) Run(ctx context.Context) error {
	svcs, err := p.Services()
	if err != nil {
		return err
	}
	mgr := service.NewManager(p.Log, svcs...)
	p.mu.Lock()
	p.ready = mgr.Ready
	p.mu.Unlock()
	err = app.RunManager(ctx, p.Log, p.Server, mgr)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return errors.Join(err, p.Tracing.Shutdown(sctx))
}
