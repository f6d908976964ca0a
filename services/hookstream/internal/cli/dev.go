package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/hookstream/hookstream/pkg/kafka/embedded"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/redisconn"
	"github.com/hookstream/hookstream/services/hookstream/internal/process"
	"github.com/hookstream/hookstream/services/hookstream/internal/receiver"
	"github.com/hookstream/hookstream/services/ingest"
)

// devHooks let other commands (demo) run dev in-process.
type devHooks struct {
	// ctx ends the run like SIGTERM does; default: until a signal.
	ctx context.Context
	// onReceive is told of every webhook the dev receiver gets.
	onReceive func(receiver.Received)
	// ready is closed once every service runs.
	ready chan<- struct{}
	// extra manifests applied with the -f ones.
	extra []manifest.Object
	// options of the process (an in-memory span exporter in tests).
	options process.Options
	// started is told the process and the broker's address once they exist.
	started func(p *process.Process, kafkaAddr string)
}

// runDev runs every service in one process on an embedded Kafka broker
// (kfake, on a real port) and an embedded Redis unless --redis is given.
// Everything else is the same code as `serve all`.
func runDev(args []string, stdout, stderr io.Writer) error {
	return dev(args, stdout, stderr, devHooks{})
}

func dev(args []string, stdout, stderr io.Writer, hooks devHooks) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		files     multiFlag
		redisAddr = fs.String("redis", "", "Use this Redis (host:port) instead of the embedded one.")
		dataDir   = fs.String("data-dir", ".hookstream", "Where Kafka's and the services' state is kept across restarts.")
		ephemeral = fs.Bool("ephemeral", false, "Keep all state in memory and temporary directories; nothing survives a restart.")
		kafkaPort = fs.Int("kafka-port", 9092, "Port of the embedded Kafka broker on 127.0.0.1 (0: any free port).")
		listen    = fs.String("listen", "127.0.0.1:8080", "HTTP address of the API, the dev receiver, /healthz, /readyz and /metrics.")
		logLevel  = fs.String("log.level", "info", "debug, info, warn or error.")
		logFormat = fs.String("log.format", "text", "text or json.")
		openAPI   = fs.Bool("allow-unauthenticated", false, "Allow a --listen address beyond loopback: dev's API has no tokens, so anyone who reaches it can send events and change campaigns.")
	)
	fs.Var(&files, "f", "Manifest file or directory to apply at start (repeatable).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	objs, err := readManifests(files)
	if err != nil {
		return err
	}

	var cfg process.Config
	cfg.RegisterFlags(flag.NewFlagSet("defaults", flag.ContinueOnError))
	cfg.Target = process.ModAll
	cfg.Log.Level, cfg.Log.Format = *logLevel, *logFormat
	cfg.Server.ListenAddress = *listen
	cfg.Ingest.AllowUnauthenticated = true     // checked here, with dev's own flag
	cfg.Dispatcher.AllowPrivateNetworks = true // the dev receiver is on loopback
	cfg.Dispatcher.SecretDirs = []string{"/"}  // the user's own machine: secret files anywhere
	if err := cfg.Validate(); err != nil {
		return err
	}
	apiNote := "no tokens: loopback only"
	if !ingest.Loopback(*listen) {
		if !*openAPI {
			return fmt.Errorf("--listen %s is beyond loopback: dev's API has no tokens, so anyone who reaches it could send events or change campaigns (pass --allow-unauthenticated to open it anyway, or run `hookstream serve` with tokens)", *listen)
		}
		apiNote = "no tokens: OPEN to anyone who reaches it (--allow-unauthenticated)"
	}
	log := cfg.Log.Logger()

	dir := *dataDir
	if *ephemeral {
		if dir, err = os.MkdirTemp("", "hookstream-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	cfg.Evaluator.DataDir = filepath.Join(dir, "evaluator")
	cfg.Timer.DataDir = filepath.Join(dir, "timer")

	bcfg := embedded.Config{Port: *kafkaPort, Partitions: cfg.Kafka.Partitions}
	if !*ephemeral {
		bcfg.DataDir = filepath.Join(dir, "kafka")
	}
	broker, err := embedded.Start(bcfg, log)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			return fmt.Errorf("%w (is another Kafka or hookstream dev running? use --kafka-port)", err)
		}
		return err
	}
	defer broker.Close()
	cfg.Kafka.Brokers = []string{broker.Addr()}

	redisNote := "embedded (in memory)"
	if *redisAddr != "" {
		cfg.Redis.Addr = *redisAddr
		redisNote = *redisAddr
	} else {
		r, err := redisconn.StartEmbedded()
		if err != nil {
			return err
		}
		defer r.Close()
		cfg.Redis.Addr = r.Addr()
	}

	p, err := process.New(cfg, log, hooks.options)
	if err != nil {
		return err
	}
	if hooks.started != nil {
		hooks.started(p, broker.Addr())
	}
	p.Manifests = append(objs, hooks.extra...)
	recv := receiver.New(log)
	recv.OnReceive = hooks.onReceive
	recv.Register(p.Server.Mux)

	stateNote := dir
	if *ephemeral {
		stateNote = "in memory (--ephemeral)"
	}
	fmt.Fprintf(stdout, `Hookstream %s, all services in one process
  send events:  Kafka %s, topic %s   (kcat -b %s -t %s -P)
                or POST http://%s/v1/events
  API:          http://%s   (%s)
  receiver:     http://%s/dev/receiver   (webhooks sent there are logged)
  redis:        %s
  state:        %s
  stop:         Ctrl-C or SIGTERM (in-flight work finishes; a second signal exits at once)
`, version(), broker.Addr(), cfg.Kafka.Topics().EventsRaw, broker.Addr(), cfg.Kafka.Topics().EventsRaw, *listen, *listen, apiNote, *listen, redisNote, stateNote)
	if f, ok := stdout.(*os.File); ok {
		_ = f.Sync()
	}
	ctx := hooks.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	if hooks.ready != nil {
		go func() {
			for ctx.Err() == nil {
				if p.Ready() {
					close(hooks.ready)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	return p.Run(ctx)
}
