// Package cli is the hookstream command line: running services (serve,
// dev) and the client commands.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/hookstream/hookstream/pkg/app"
	"github.com/hookstream/hookstream/pkg/manifest"
	"github.com/hookstream/hookstream/pkg/webhook"
	"github.com/hookstream/hookstream/services/hookstream/internal/process"
)

// Version is set at build time with -ldflags "-X .../cli.Version=v1.2.3".
var Version = ""

func version() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// command is one subcommand. Each lives in its own file and registers
// itself in init, so that commands are added without touching the others.
type command struct {
	// usage is the synopsis shown in help, e.g. "dev [-f FILE|DIR]...".
	usage string
	help  string
	run   func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{}

func register(name string, c command) { commands[name] = c }

func init() {
	register("dev", command{usage: "dev [-f FILE|DIR]... [flags]", help: "every service in one process on embedded Kafka and Redis", run: runDev})
	register("serve", command{usage: "serve TARGET [flags]", help: "run ingest, evaluator, timer, dispatcher or all", run: runServe})
	register("validate", command{usage: "validate -f FILE|DIR|-", help: "check manifests offline", run: runValidate})
	register("version", command{usage: "version", help: "print the version", run: func(_ []string, stdout, _ io.Writer) error {
		fmt.Fprintln(stdout, "hookstream", version())
		return nil
	}})
}

func usage() string {
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("hookstream: behavioural webhook campaigns on Kafka.\n\nUsage:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  hookstream %-34s %s\n", commands[n].usage, commands[n].help)
	}
	b.WriteString("\nRun \"hookstream COMMAND -h\" for a command's flags.\n")
	return b.String()
}

// Main runs the command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	webhook.Version = version()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	var err error
	switch name := args[0]; name {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage())
	case "--version", "-version":
		fmt.Fprintln(stdout, "hookstream", version())
	default:
		c, ok := commands[name]
		if !ok {
			fmt.Fprintf(stderr, "unknown command %q\n\n%s", name, usage())
			return 2
		}
		err = c.run(args[1:], stdout, stderr)
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "error:", err)
		return 1
	}
	return 0
}

// runServe runs one target: `hookstream serve TARGET -config.file=...`.
func runServe(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	// `serve TARGET` is -target=TARGET, which overrides the file's target
	// before the configuration is validated.
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		args = append([]string{"-target=" + args[0]}, args[1:]...)
	}
	var cfg process.Config
	loaded, err := app.LoadConfig(&cfg, fs, args, app.LoadOptions{})
	if err != nil {
		return err
	}
	if err := cfg.CheckAuth(); err != nil {
		return err
	}
	if loaded.Verify {
		out, _ := yaml.Marshal(redacted(cfg))
		fmt.Fprintf(stdout, "# configuration is valid\n%s", out)
		return nil
	}
	log := cfg.Log.Logger()
	p, err := process.New(cfg, log)
	if err != nil {
		return err
	}
	log.Info("starting", "component", "hookstream", "target", cfg.Target, "version", version(), "http", cfg.Server.ListenAddress, "kafka", cfg.Kafka.Brokers.String())
	return p.Run(context.Background())
}

// redacted hides secrets when printing a configuration.
func redacted(c process.Config) process.Config {
	hide := func(s *string) {
		if *s != "" {
			*s = "<redacted>"
		}
	}
	hide(&c.Kafka.SASL.Password)
	hide(&c.Redis.Password)
	if len(c.Ingest.Tokens) > 0 {
		c.Ingest.Tokens = []string{"<redacted>"}
	}
	if len(c.Ingest.AdminTokens) > 0 {
		c.Ingest.AdminTokens = []string{"<redacted>"}
	}
	return c
}

func runValidate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var files multiFlag
	fs.Var(&files, "f", "Manifest file, directory, or - for stdin (repeatable).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("validate: give manifests with -f FILE|DIR|-")
	}
	objs, err := readManifests(files)
	if err != nil {
		return err
	}
	if len(objs) == 0 {
		return fmt.Errorf("validate: no manifests in %s", strings.Join(files, ", "))
	}
	if probs := manifest.Validate(objs, nil); len(probs) > 0 {
		return fmt.Errorf("invalid manifests:\n%w", probs)
	}
	for _, o := range objs {
		fmt.Fprintf(stdout, "%s valid\n", manifest.Key(o))
	}
	return nil
}

// readManifests reads every -f argument (file, directory, or - for stdin).
func readManifests(paths []string) ([]manifest.Object, error) {
	var all []manifest.Object
	for _, p := range paths {
		var objs []manifest.Object
		var err error
		if p == "-" {
			data, rerr := io.ReadAll(stdin)
			if rerr != nil {
				return nil, rerr
			}
			objs, err = manifest.Parse(data, "<stdin>")
		} else {
			objs, err = manifest.ParsePath(p)
		}
		if err != nil {
			return nil, fmt.Errorf("reading manifests:\n%w", err)
		}
		all = append(all, objs...)
	}
	return all, nil
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
